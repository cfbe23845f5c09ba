"""The guessing game with recurring structure, after "Exploitation Is All You Need... for Exploration".

That paper (arXiv 2508.01287) trains meta-RL agents with a purely greedy objective and finds that
they still explore when (1) the environment has recurring structure, (2) the agent has memory of
past interactions, and (3) credit is assigned over a long horizon; removing (1) or (2) removes the
emergent exploration. This environment puts conditions 1 and 2 behind two recipe switches.

**Worlds and episodes.** A *world* has ``homes`` (default 2) "home" values drawn uniformly from
``1..n_values`` (default 31). A world's episodes each hide one target: with ``structure: true``
the target is one of the world's home values (uniformly), except with probability ``noise``
(default 0) a uniform value; with ``structure: false`` every target is uniform on ``1..n_values``,
so nothing recurs. A prompt is the last episode of a world: ``history`` (default 4) earlier
episodes of that world came before it. Every prompt has its own world, so no home value is
shared between prompts (a policy cannot memorise them in its weights) and splits are disjoint
sets of worlds. The random draws of a world do not depend on the switches: the same seed gives
the same worlds, and ``structure`` only decides whether the home draws or the uniform draws are
used; ``memory`` changes the prompt text only.

**Memory** means *in-context* memory of the world: with ``memory: true`` the prompt lists the
targets of the world's earlier episodes, oldest first (``past 12 27 12 12; guess 1..31``); with
``memory: false`` it does not (``guess 1..31``, the same text for every prompt). The agent did not
play those earlier episodes; the history is what an agent that had solved them would remember
(their targets). Nothing is remembered across prompts at training time.

**Turns.** Each turn ends with ``<guess>N</guess>``. Observations: ``higher`` (the target is
higher than N), ``lower``, or ``correct`` (which ends the episode); a body that is not a whole
number in range gets ``error: guess a whole number from 1 to 31``. ``<answer>N</answer>`` is a
final guess without feedback: it ends the episode, right or wrong. A malformed turn gets the
action format's error message. Every turn, malformed ones included, uses one of the ``max_turns``
(default 8; the expert below needs at most ``homes + n_values.bit_length()`` = 7, and a smaller
budget is refused). The budget is the rollout's (``rollout.max_turns``, default the task's
``max_turns``; stop reason ``turn_budget``): the environment never ends an episode for it.

**Reward** (greedy, as in the paper: no exploration bonus): on the turn that finds the target,
``max(0, 1 - guess_penalty * (turns - 1))`` where ``turns`` counts this turn and the ones before
it (``guess_penalty`` default 0.1); 0 on every other turn and for a wrong ``<answer>`` or an
exhausted budget. Paying for fewer turns is what makes exploiting the world's structure worth it.

``info["useful"]``: the guess was consistent with all feedback so far (inside the interval the
feedback still allows; a wrong guess never is again). ``info["from_history"]``: the guess is one
of the history's values (kept in the episode records: how often the policy exploits its memory).

**The expert** (``episode_demonstration``): with probability ``demo_exploit`` (default 0.5), when
the prompt shows a history, it first guesses the ``homes`` most frequent history values (ties:
smaller first) that the feedback still allows, then binary search on what is left; otherwise pure
binary search (the midpoint, rounded down). The rate is the same under every switch, so the SFT
base models of the four conditions are alike and only the environment decides whether exploiting
the history pays (it does with structure; without it a history guess is usually a wasted turn).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

from entrolab.agents.env import StepResult, ToolEnv
from entrolab.agents.envs.calculator import ASCII_CHARSET, check_float, check_int, last_tag_body
from entrolab.agents.toolcall import format_action
from entrolab.registry import TASKS
from entrolab.types import Prompt, Verdict

SPLITS = ("train", "validation", "test", "sft")
_NUMBER = re.compile(r"[0-9]{1,6}")
_ID = re.compile(r"(train|validation|test|sft)-([0-9]+)")


def draw_world(seed: int, world: int, *, n_values: int, homes: int, history: int, noise: float,
               structure: bool) -> tuple[list[int], list[int]]:
    """(home values, targets of the world's ``history + 1`` episodes; the last is the prompt's).

    The draws are the same whatever ``structure`` says (one home draw and one uniform draw per
    episode, always both); ``structure`` picks which one each episode uses.
    """
    rng = random.Random(f"guessing:{seed}:{world}")  # a str seed is stable across processes
    home = rng.sample(range(1, n_values + 1), homes)
    targets = []
    for _ in range(history + 1):
        u, h, x = rng.random(), rng.choice(home), rng.randint(1, n_values)
        targets.append(h if structure and u >= noise else x)
    return home, targets


def format_prompt(past: list[int] | None, n_values: int) -> str:
    """``past 12 27 12 12; guess 1..31`` (memory) or ``guess 1..31`` (``past`` None: no memory)."""
    tail = f"guess 1..{n_values}"
    return tail if past is None else "past " + " ".join(map(str, past)) + "; " + tail


def expert_guesses(target: int, past: list[int] | None, *, n_values: int, exploit: int) -> list[int]:
    """The expert's guesses until it finds ``target`` (see the module docstring).

    ``exploit`` is how many of the history's values (most frequent first) it tries before binary
    search (0: pure binary search). It needs at most ``exploit + n_values.bit_length()`` guesses.
    """
    lo, hi, guesses = 1, n_values, []
    ranked = sorted(Counter(past or []).items(), key=lambda kv: (-kv[1], kv[0]))
    candidates = [v for v, _ in ranked[:exploit]]
    while True:
        allowed = [v for v in candidates if lo <= v <= hi and v not in guesses]
        g = allowed[0] if allowed else (lo + hi) // 2
        guesses.append(g)
        if g == target:
            return guesses
        lo, hi = (g + 1, hi) if target > g else (lo, g - 1)


class GuessingEnv(ToolEnv):
    """One guessing episode (see the module docstring). No randomness: the target is the prompt's."""

    tools = ("guess",)

    def __init__(self, target: int, past: list[int] | None, *, n_values: int = 31, guess_penalty: float = 0.1):
        self.target, self.past = target, list(past or [])
        self.n_values, self.guess_penalty = n_values, guess_penalty
        self.reset(None)

    def reset(self, prompt: Prompt | None) -> str:
        self.turns, self.lo, self.hi = 0, 1, self.n_values
        self.done = False
        self.verdict = Verdict(0.0, False, None, "no_answer")
        return ""

    def _judge(self, body: str, *, final: bool) -> StepResult:
        if not _NUMBER.fullmatch(body) or not 1 <= int(body) <= self.n_values:
            if final:
                self.verdict = Verdict(0.0, False, None, "bad_answer")
            return StepResult(f"error: guess a whole number from 1 to {self.n_values}", 0.0, final)
        g = int(body)
        # feedback on a wrong guess g moves lo past it or hi below it, so a repeat is never useful
        info = {"useful": self.lo <= g <= self.hi, "from_history": g in self.past}
        turns = self.turns + 1  # this turn included
        if g == self.target:
            reward = max(0.0, 1.0 - self.guess_penalty * (turns - 1))
            self.verdict = Verdict(reward, True, str(g), "ok")
            return StepResult("correct", reward, True, info)
        self.verdict = Verdict(0.0, False, str(g), "wrong_value")
        if g < self.target:
            self.lo = max(self.lo, g + 1)
            return StepResult("" if final else "higher", 0.0, final, info)
        self.hi = min(self.hi, g - 1)
        return StepResult("" if final else "lower", 0.0, final, info)

    def call_tool(self, name: str, body: str) -> StepResult:
        return self._judge(body, final=False)

    def answer(self, body: str) -> StepResult:
        return self._judge(body, final=True)

    def step(self, action_text: str) -> StepResult:
        if self.done:  # the rollout stops at done; a caller that goes on learns so, no exception
            return StepResult("error: the episode is over", 0.0, True,
                              {"malformed": True, "tool_call": False, "useful": False, "from_history": False})
        result = super().step(action_text)
        self.turns += 1
        info = {"useful": False, "from_history": False, **result.info}
        self.done = result.done
        return StepResult(result.observation, result.reward, self.done, info)

    def outcome(self) -> Verdict:
        """Success (reward as on the finding turn), else the last well-formed guess's value."""
        return self.verdict


@TASKS.register("guessing", paper="Exploitation Is All You Need... for Exploration", arxiv="2508.01287")
class Guessing:
    """The guessing game with recurring structure as an episodic task (see the module docstring).

    Args (keyword-only):
        seed: seed of the worlds.
        structure: targets recur (a world's home values) or are uniform (the paper's condition 1).
        memory: the prompt shows the world's earlier targets or not (condition 2).
        n_values: targets are in ``1..n_values``.
        homes: home values per world (structure on).
        history: earlier episodes per world (shown with memory on).
        noise: probability that a structured target is uniform instead.
        n_train, n_validation, n_test, n_sft: split sizes (worlds).
        max_turns: the default turn budget of the rollout (``rollout.max_turns``).
        guess_penalty: reward lost per turn before the finding one.
        demo_exploit: probability that a demonstration guesses the history's values first.
    """

    name = "guessing"
    answer_marker = None

    def __init__(self, *, seed: int = 0, structure: bool = True, memory: bool = True, n_values: int = 31,
                 homes: int = 2, history: int = 4, noise: float = 0.0, n_train: int = 2000,
                 n_validation: int = 200, n_test: int = 200, n_sft: int = 2000, max_turns: int = 8,
                 guess_penalty: float = 0.1, demo_exploit: float = 0.5):
        t = self.name
        self.seed = check_int(t, "seed", seed, 0)
        for key, flag in (("structure", structure), ("memory", memory)):
            if not isinstance(flag, bool):
                raise ValueError(f"{t}: {key} must be true or false, got {flag!r}")
        self.structure, self.memory = structure, memory
        self.n_values = check_int(t, "n_values", n_values, 2, 999)
        self.homes = check_int(t, "homes", homes, 1, n_values)
        self.history = check_int(t, "history", history, 0, 50)
        self.noise = check_float(t, "noise", noise, 0.0, 1.0)
        self.sizes = {s: check_int(t, f"n_{s}", n, 0) for s, n in
                      (("train", n_train), ("validation", n_validation), ("test", n_test), ("sft", n_sft))}
        self.max_turns = check_int(t, "max_turns", max_turns, 1)
        self.guess_penalty = check_float(t, "guess_penalty", guess_penalty, 0.0, 1.0)
        self.demo_exploit = check_float(t, "demo_exploit", demo_exploit, 0.0, 1.0)
        worst = (homes if memory and demo_exploit > 0 else 0) + n_values.bit_length()
        if max_turns < worst:  # the expert's demonstrations would run out of turns
            raise ValueError(f"{t}: max_turns must be >= {worst} (the expert's longest episode: "
                             f"{homes if worst > n_values.bit_length() else 0} history guesses + binary search "
                             f"on 1..{n_values}), got {max_turns}")
        self._splits: dict[str, list[Prompt]] | None = None

    # ------------------------------------------------------------------ worlds
    def _prompt(self, split: str, index: int, world: int) -> Prompt:
        home, targets = draw_world(self.seed, world, n_values=self.n_values, homes=self.homes,
                                   history=self.history, noise=self.noise, structure=self.structure)
        past = targets[:-1]
        return Prompt(id=f"{split}-{index:05d}", text=format_prompt(past if self.memory else None, self.n_values),
                      meta={"world": world, "home": home, "past": past, "target": targets[-1]})

    def prompts(self, split: str) -> list[Prompt]:
        """Prompts of ``split``: worlds numbered test, validation, train, sft in that order."""
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if self._splits is None:
            self._splits, start = {}, 0
            for s in ("test", "validation", "train", "sft"):
                self._splits[s] = [self._prompt(s, i, start + i) for i in range(self.sizes[s])]
                start += self.sizes[s]
        return list(self._splits[split])

    def problem(self, prompt: Prompt) -> tuple[int, list[int]]:
        """(target, the world's earlier targets) of ``prompt``: from its meta, else by its id.

        A prompt's text does not determine its target (with memory off every text is the same),
        so a prompt rebuilt without meta (e.g. from an eval file) is looked up by its id.
        """
        meta = prompt.meta or {}
        if "target" in meta and "past" in meta:
            return int(meta["target"]), [int(v) for v in meta["past"]]
        m = _ID.fullmatch(prompt.id)
        if m is None or int(m.group(2)) >= self.sizes[m.group(1)]:
            raise ValueError(f"{self.name}: prompt {prompt.id!r} has no target in its meta and its id "
                             "names no prompt of this task's splits")
        found = self.prompts(m.group(1))[int(m.group(2))]
        if found.text != prompt.text:
            raise ValueError(f"{self.name}: prompt {prompt.id!r} has text {prompt.text[:80]!r}, but this "
                             f"task's prompt with that id reads {found.text[:80]!r} (another seed or setting?)")
        return self.problem(found)

    # ------------------------------------------------------------------ episodes
    def make_env(self, prompt: Prompt, *, seed: int = 0) -> GuessingEnv:
        """A fresh environment for ``prompt`` (deterministic: the env draws nothing, ``seed`` is unused)."""
        target, past = self.problem(prompt)
        return GuessingEnv(target, past if self.memory else None, n_values=self.n_values,
                           guess_penalty=self.guess_penalty)

    def episode_demonstration(self, prompt: Prompt, rng: random.Random) -> list[tuple[str, str]]:
        """The expert's episode: history values first (rate ``demo_exploit``, memory on), then binary search."""
        target, past = self.problem(prompt)
        exploit = self.homes if rng.random() < self.demo_exploit else 0
        guesses = expert_guesses(target, past if self.memory else None, n_values=self.n_values, exploit=exploit)
        return [(format_action("guess", str(g)), "correct" if g == target else ("higher" if target > g else "lower"))
                for g in guesses]

    # ------------------------------------------------------------------ Task protocol
    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        """Judge a bare text: its last ``<answer>`` or, lacking one, its last ``<guess>`` (reward 1/0).

        A bare text has no turns to count, so no guess penalty applies here; the environment's
        reward does count them.
        """
        target, _ = self.problem(prompt)
        body = last_tag_body(completion, "answer")
        body = last_tag_body(completion, "guess") if body is None else body
        if body is None:
            return Verdict(0.0, False, None, "no_answer")
        if not _NUMBER.fullmatch(body):
            return Verdict(0.0, False, None, "bad_answer")
        ok = int(body) == target
        return Verdict(1.0 if ok else 0.0, ok, str(int(body)), "ok" if ok else "wrong_value")

    def solutions(self, prompt: Prompt) -> list[str]:
        """The target, as text."""
        return [str(self.problem(prompt)[0])]

    def demonstration(self, prompt: Prompt, rng: Any) -> None:
        """None: an episodic task is imitated through :meth:`episode_demonstration`."""
        return None

    def charset(self) -> str:
        """Printable ASCII and the newline."""
        return ASCII_CHARSET
