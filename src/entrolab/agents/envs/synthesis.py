"""Policy synthesis: the model writes a rule-language policy for a two-agent gathering game.

Scaled down from "Cooperation and Exploitation in LLM Policy Synthesis for Sequential Social
Dilemmas" (seed paper; docs/agents/synthesis.md): each turn the model submits a policy
(``agents.rules``), the environment plays it for ``ticks`` ticks and shows feedback: the scalar
return only (``sparse``) or the return plus the social metrics efficiency, equality and
sustainability (``dense``), and the model refines it.

**The game** and its metrics are in :mod:`entrolab.agents.gathering`. Agent 0 runs the model's
policy; agent 1 runs the prompt's opponent: the same policy (``self``, self-play as in the paper)
or a fixed one of ``gathering.OPPONENTS`` (named in the prompt). Feedback: ``ret`` = return, ``eff`` = efficiency,
``eq`` = equality, ``sus`` = sustainability.

**Episode**: ``<policy>P</policy>`` evaluates P and shows feedback, ``<answer>P</answer>`` does the
same and ends the episode; the rollout's turn budget (``rollout.max_turns``, by default the task's
``max_turns``) ends it otherwise, so the environment itself never counts turns. The episode's value is the BEST
return among the policies submitted (the game is deterministic, so a user deploys the best
evaluated policy; "final" would punish probing). Each turn's reward is its improvement on the
best so far, ``max(0, return − best)``, so the rewards of an episode sum to the best return.
``info["useful"]``: the policy ran and improved on the best so far. The episode succeeds when the
best return reaches the reference: the best return of a small family of expert policies
(:func:`reference_policies`) against the same opponent.
"""

from __future__ import annotations

import random
import string
from typing import Any

from entrolab.agents.env import StepResult, ToolEnv
from entrolab.agents.gathering import OPPONENTS, Game
from entrolab.agents.rules import MAX_STEPS, RuleError, format_policy, parse_policy
from entrolab.registry import TASKS
from entrolab.types import Prompt, Verdict

SPLITS = ("train", "validation", "test", "sft")
FEEDBACK = ("sparse", "dense")
PAPER = "Cooperation and Exploitation in LLM Policy Synthesis for Sequential Social Dilemmas"


def format_feedback(metrics: dict[str, float], *, feedback: str) -> str:
    """``ret 0.53`` (sparse) or ``ret 0.53 eff 0.50 eq 0.97 sus 0.80`` (dense), two decimals."""
    text = f"ret {metrics['return']:.2f}"
    if feedback == "dense":
        text += (f" eff {metrics['efficiency']:.2f} eq {metrics['equality']:.2f}"
                 f" sus {metrics['sustainability']:.2f}")
    return text


def reference_policies(game: Game) -> list[str]:
    """The expert family whose best return is the success bar: for every threshold T in 0..cap,
    gather when ``stock ge T`` (plain ``gather`` for T = 0), alone, after first punishing a
    gatherer, or after waiting out the other's gather (turn-taking)."""
    out = []
    for t in range(game.cap + 1):
        base = "gather" if t == 0 else f"if stock ge {t} then gather;wait"
        out += [base, f"if last eq gather then punish;{base}", f"if last eq gather then wait;{base}"]
    return out


#: What a prompt says instead of the opponent's name when the task hides it.
HIDDEN = "?"


def prompt_text(game: Game, *, hide_opponent: bool = False) -> str:
    """``cap 9 grow 5 vs greedy:``, or ``cap 9 grow 5 vs ?:`` with the opponent hidden (ticks,
    freeze and the feedback kind are task-wide)."""
    return f"cap {game.cap} grow {game.grow} vs {HIDDEN if hide_opponent else game.opponent}:"


def parse_prompt(text: str) -> tuple[int, int, str]:
    """Inverse of :func:`prompt_text` (cap, grow, opponent or ``?``); ValueError naming the text."""
    words = text.rstrip(":").split(" ")
    ok = (len(words) == 6 and text.endswith(":") and words[0] == "cap" and words[2] == "grow"
          and words[4] == "vs" and words[1].isdigit() and words[3].isdigit() and (words[5] in OPPONENTS or words[5] == HIDDEN))
    if not ok:
        raise ValueError(f"not a synthesis prompt (expected like 'cap 9 grow 5 vs greedy:'): {text[:80]!r}")
    return int(words[1]), int(words[3]), words[5]


# ------------------------------------------------------------------ the environment
class SynthesisEnv(ToolEnv):
    """One refinement episode for one game (module docstring); ``tools``: ``policy``."""

    tools = ("policy",)

    def __init__(self, game: Game, *, feedback: str, reference: float):
        self.game, self.feedback, self.reference = game, feedback, reference
        self.best, self.best_policy, self.ended = 0.0, None, False

    def reset(self, prompt: Prompt) -> str:
        self.best, self.best_policy, self.ended = 0.0, None, False
        return ""

    def _evaluate(self, body: str, *, final: bool) -> StepResult:
        try:
            policy = parse_policy(body)
            metrics = self.game.metrics(self.game.play(policy))
        except RuleError as err:
            return StepResult(f"error: {err}", 0.0, final,
                              {"useful": False, "parse_error": True, "error_kind": err.kind})
        gain = max(0.0, metrics["return"] - self.best)
        if metrics["return"] > self.best or self.best_policy is None:
            self.best, self.best_policy = max(self.best, metrics["return"]), format_policy(policy)
        return StepResult(format_feedback(metrics, feedback=self.feedback), gain, final,
                          {"useful": gain > 0, "parse_error": False, **metrics})

    def call_tool(self, name: str, body: str) -> StepResult:
        return self._evaluate(body, final=False)

    def answer(self, body: str) -> StepResult:
        return self._evaluate(body, final=True)

    def step(self, action_text: str) -> StepResult:
        if self.ended:
            return StepResult("error: the episode is over", 0.0, True, {"useful": False, "malformed": False,
                                                                        "tool_call": False})
        result = super().step(action_text)
        self.ended = result.done
        return StepResult(result.observation, result.reward, self.ended,
                          {"useful": False, "parse_error": False, **result.info})

    def outcome(self) -> Verdict:
        """Reward = best return; correct = it reaches the reference; answer = the best policy's canonical text."""
        if self.best_policy is None:
            return Verdict(0.0, False, None, "no_policy")
        ok = self.best >= self.reference
        return Verdict(self.best, ok, self.best_policy, "ok" if ok else "below_reference")


# ------------------------------------------------------------------ the task
def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"synthesis: {name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"synthesis: {name} must be {bound}, got {value}")
    return value


@TASKS.register("synthesis", paper=PAPER, arxiv=None)
class Synthesis:
    """Episodic task: write and refine a gathering-game policy from sparse or dense feedback.

    Games: every (grow, cap, opponent) with grow in [min_grow, max_grow], cap in
    [grow + 2, 2 grow + 1] (one agent gathering each tick can be sustained, both gathering
    every tick cannot) and opponent in ``opponents``, shuffled with ``seed``; the first n_test
    form ``test``, then ``validation``, ``train``, ``sft`` (disjoint). Ids ``<split>-<index:05d>``.

    Args (keyword-only):
        seed: seed of the shuffle (and nothing else: the game is deterministic).
        feedback: ``sparse`` (return only) or ``dense`` (return + efficiency, equality, sustainability).
        ticks: game length; freeze: ticks a punished agent is frozen; max_steps: interpreter budget
            per decision.
        min_grow, max_grow: range of the regrowth divisor.
        opponents: opponent names (keys of ``OPPONENTS``; ``self`` = self-play).
        max_turns: default turn budget of an episode.
        n_train, n_validation, n_test, n_sft: split sizes.
        hide_opponent: prompts say ``vs ?`` instead of the opponent (kept in ``Prompt.meta``), so
            only the feedback tells the opponents apart.
    """

    name = "synthesis"
    answer_marker = None

    def __init__(self, *, seed: int = 0, feedback: str = "dense", ticks: int = 40, freeze: int = 3,
                 max_steps: int = MAX_STEPS, min_grow: int = 3, max_grow: int = 12,
                 opponents: tuple[str, ...] | list[str] = ("self", "greedy", "cautious", "warden"),
                 max_turns: int = 4, n_train: int = 140, n_validation: int = 40, n_test: int = 40,
                 n_sft: int = 60, hide_opponent: bool = False):
        self.seed = _int("seed", seed, 0)
        if not isinstance(hide_opponent, bool):
            raise ValueError(f"synthesis: hide_opponent must be true or false, got {hide_opponent!r}")
        self.hide_opponent = hide_opponent
        if feedback not in FEEDBACK:
            raise ValueError(f"synthesis: feedback must be one of {', '.join(FEEDBACK)}, got {feedback!r}")
        self.feedback = feedback
        self.ticks = _int("ticks", ticks, 1, 1000)
        self.freeze = _int("freeze", freeze, 0, 1000)
        # the fixed opponents and the reference policies need up to 7 steps a decision, and the
        # limit applies to both agents
        self.max_steps = _int("max_steps", max_steps, 8, 100_000)
        self.min_grow = _int("min_grow", min_grow, 1, 99)
        self.max_grow = _int("max_grow", max_grow, min_grow, 99)
        if isinstance(opponents, str) or not opponents:
            raise ValueError(f"synthesis: opponents must be a non-empty list of names, got {opponents!r}")
        bad = [o for o in opponents if o not in OPPONENTS]
        if bad:
            raise ValueError(f"synthesis: unknown opponents {bad}; known: {', '.join(OPPONENTS)}")
        self.opponents = tuple(dict.fromkeys(opponents))
        self.max_turns = _int("max_turns", max_turns, 1, 100)
        self.sizes = {"train": _int("n_train", n_train, 0), "validation": _int("n_validation", n_validation, 0),
                      "test": _int("n_test", n_test, 0), "sft": _int("n_sft", n_sft, 0)}
        n_games = len(self._grid())
        total = sum(self.sizes.values())
        if total > n_games:
            raise ValueError(f"synthesis: the splits ask for {total} games but grow in "
                             f"[{self.min_grow}, {self.max_grow}] with {len(self.opponents)} opponents "
                             f"gives only {n_games}; widen the grow range or shrink the splits")
        self._splits: dict[str, list[Prompt]] | None = None
        self._reference: dict[Game, tuple[float, list[tuple[float, str]]]] = {}

    # ------------------------------------------------------------ games and prompts
    def game(self, prompt: Prompt) -> Game:
        cap, grow, opp = parse_prompt(prompt.text)
        if opp == HIDDEN:  # the prompt hides it; the task's own prompts carry it in meta
            opp = (prompt.meta or {}).get("opponent")
            if opp not in OPPONENTS:
                raise ValueError(f"synthesis: prompt {prompt.id!r} hides its opponent and its meta names "
                                 f"none of {', '.join(OPPONENTS)} (got {opp!r})")
        return Game(cap, grow, opp, ticks=self.ticks, freeze=self.freeze, max_steps=self.max_steps)

    def _grid(self) -> list[tuple[int, int, str]]:
        """Every (cap, grow, opponent) of the class docstring, in a fixed order."""
        return [(cap, grow, opp) for grow in range(self.min_grow, self.max_grow + 1)
                for cap in range(grow + 2, 2 * grow + 2) for opp in self.opponents]

    def _generate(self) -> dict[str, list[Prompt]]:
        games = self._grid()
        random.Random(self.seed).shuffle(games)
        out, start = {}, 0
        for split in ("test", "validation", "train", "sft"):
            chunk = games[start:start + self.sizes[split]]
            start += self.sizes[split]
            out[split] = [Prompt(id=f"{split}-{i:05d}", text=prompt_text(Game(cap, grow, opp), hide_opponent=self.hide_opponent),
                                 meta={"cap": cap, "grow": grow, "opponent": opp})
                          for i, (cap, grow, opp) in enumerate(chunk)]
        return out

    def prompts(self, split: str) -> list[Prompt]:
        if split not in SPLITS:
            raise ValueError(f"synthesis: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if self._splits is None:
            self._splits = self._generate()
        return list(self._splits[split])

    def reference(self, prompt: Prompt) -> tuple[float, list[tuple[float, str]]]:
        """(best reference return, [(return, policy) of every reference policy]) for the prompt's game."""
        game = self.game(prompt)
        if game not in self._reference:
            scored = [(game.metrics(game.play(parse_policy(p)))["return"], p) for p in reference_policies(game)]
            self._reference[game] = (max(r for r, _ in scored), scored)
        return self._reference[game]

    # ------------------------------------------------------------ episodes
    def make_env(self, prompt: Prompt, *, seed: int) -> SynthesisEnv:
        """A fresh environment (``seed`` is unused: the game is deterministic)."""
        return SynthesisEnv(self.game(prompt), feedback=self.feedback, reference=self.reference(prompt)[0])

    def episode_demonstration(self, prompt: Prompt, rng: random.Random) -> list[tuple[str, str]]:
        """An expert refining: up to ``max_turns - 1`` weaker reference policies in increasing
        order of return (each a ``<policy>`` turn), then the best one as ``<answer>`` (shortest
        text among the best). Observations are the real feedback."""
        best, scored = self.reference(prompt)
        top = min((p for r, p in scored if r == best), key=lambda p: (len(p), p))
        weaker = sorted({r: p for r, p in scored if r < best}.items())  # one policy per return level
        k = min(len(weaker), self.max_turns - 1, rng.randint(1, 2))
        chosen = sorted(rng.sample(weaker, k)) if k > 0 else []
        env = self.make_env(prompt, seed=0)
        env.reset(prompt)
        out = []
        for tag, policy in [("policy", p) for _, p in chosen] + [("answer", top)]:
            text = f"<{tag}>{policy}</{tag}>"
            out.append((text, env.step(text).observation))
        return out

    # ------------------------------------------------------------ the Task protocol
    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        """Play the policy of the LAST ``<answer>...</answer>`` in ``completion``; reward = its return."""
        end = completion.rfind("</answer>")
        start = completion.rfind("<answer>", 0, end) if end >= 0 else -1
        if start < 0:
            return Verdict(0.0, False, None, "no_answer")
        game = self.game(prompt)
        try:
            policy = parse_policy(completion[start + len("<answer>"):end])
            ret = game.metrics(game.play(policy))["return"]
        except RuleError as err:
            return Verdict(0.0, False, None, err.kind)
        ok = ret >= self.reference(prompt)[0]
        return Verdict(ret, ok, format_policy(policy), "ok" if ok else "below_reference")

    def solutions(self, prompt: Prompt) -> None:
        return None  # infinitely many programs reach the reference

    def demonstration(self, prompt: Prompt, rng: Any) -> None:
        return None  # episodic: see episode_demonstration

    def charset(self) -> str:
        """Printable ASCII (prompts, policies, feedback and every error message use only that)."""
        return "".join(sorted(set(string.printable) - set("\x0b\x0c\r")))

