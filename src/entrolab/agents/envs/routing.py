"""Routing: an agent answers a multi-hop arithmetic chain by routing each hop to one of a pool of
local "models" that differ in accuracy, price and latency (the testbed analogue of Router-R1,
Zhang, Feng, You, arXiv 2506.09033, where an LLM router interleaves thinking with calls to other
LLMs, aggregates their answers and is rewarded for format, outcome and cost).

**Problem.** A start number and 2-3 hops, each ``+b`` or ``*b`` with single digits, applied left to
right: ``7 *8 +5 *3`` means ((7·8)+5)·3 = 183. The agent cannot see intermediate values unless it
asks for them, so a hop is a sub-query ``x op b`` whose ``x`` is the previous hop's answer (multi-hop,
like the paper's HotpotQA questions).

**Pool.** Models ``m1 .. mK`` (K = ``len(costs)``). A sub-query is **hard** when it multiplies and
an operand has two or more digits (``56*3``), otherwise **easy** (``7*8``, ``56+5``). Model k answers
an easy sub-query correctly with probability ``acc_easy[k]`` and a hard one with ``acc_hard[k]``;
a wrong answer is off by one of ±1, ±2, ±10. Whether a call is right is drawn from a
``random.Random`` seeded by (episode seed, call index, model, query), so an episode is a
deterministic function of the prompt, the seed and the actions, and asking again (a new call
index) is a fresh draw. Default pool: ``m1`` cheap and unreliable on hard hops, ``m2`` mid,
``m3`` expensive and always right: routing matters (easy hops → cheap model, hard hops → reliable
one) and the cost weight of the Router-R1 reward moves the best policy along an accuracy/cost frontier.

**Formats** (every character is a token of the char-level testbed model):

* prompt: the pool descriptors, ``|``, the chain, ``=?`` --
  ``m1 acc:30 cost:1 lat:1;m2 acc:70 cost:3 lat:2;m3 acc:100 cost:8 lat:4|7 *8 +5 *3=?``
  (``acc`` is the model's accuracy on hard sub-queries in percent); with ``show_pool`` false only
  the chain, ``7 *8 +5 *3=?``.
* a turn: optional thinking, then one action (``agents.toolcall``): ``hard <m3>56*3</m3>`` (a call:
  the body is ``<int><op><int>`` with op ``+``, ``-`` or ``*``) or ``<answer>183</answer>``.
* observation of a call: ``=<value>`` (``=168``); of a malformed turn or unreadable query:
  ``error: ...``. The answer ends the episode.

**Info per turn** (``StepResult.info``): ``model`` (name or None), ``cost`` (the model's price, 0
for answers and malformed turns), ``latency``, ``hard``, ``correct`` (the model's value is right),
``useful`` (the call returned the right value of a hop of this problem not solved before, or the
answer is right), plus ``tool_call``/``malformed`` from ``ToolEnv``. A call whose body is not a
query is malformed (``info["malformed"]`` True), as Router-R1's format check rejects a malformed
route query; it costs nothing.

**Reward.** The environment's own reward is the outcome only (1 for a right answer on its turn,
else 0), so the ``verifier`` term logs success; the cost-aware reward is the ``router_r1`` term
(``rewards/router_r1.py``), which reads ``info["cost"]``.
"""

from __future__ import annotations

import math
import random
import re
import string
from dataclasses import dataclass
from typing import Any, Literal

from entrolab.agents.env import StepResult, ToolEnv
from entrolab.agents.toolcall import format_action
from entrolab.registry import TASKS
from entrolab.types import Prompt, Verdict

SPLITS = ("train", "validation", "test", "sft")
OPS = ("+", "*")
#: Offsets of a wrong model answer (plausible arithmetic slips).
SLIPS = (-10, -2, -1, 1, 2, 10)
_QUESTION_RE = re.compile(r"(\d+)((?: [+*]\d+)+)=\?")
_QUERY_RE = re.compile(r"(-?\d{1,7})([+*-])(\d{1,7})")
DemoPolicy = Literal["random", "expert", "cheapest", "priciest"]


# --------------------------------------------------------------------------- pure functions
@dataclass(frozen=True)
class PoolModel:
    """One local model of the pool: accuracies on easy/hard sub-queries, price and latency per call."""

    name: str
    acc_easy: float
    acc_hard: float
    cost: float
    latency: float

    def descriptor(self) -> str:
        """``m1 acc:30 cost:1 lat:1`` (what the prompt shows; acc = hard accuracy in percent)."""
        return f"{self.name} acc:{round(100 * self.acc_hard)} cost:{self.cost:g} lat:{self.latency:g}"

    def accuracy(self, hard: bool) -> float:
        return self.acc_hard if hard else self.acc_easy


def apply(x: int, op: str, y: int) -> int:
    """``x op y`` for op in ``+ - *`` (exact integers; no eval)."""
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    raise ValueError(f"routing: unknown operator {op!r}")


def is_hard(x: int, op: str, y: int) -> bool:
    """A sub-query is hard when it multiplies and an operand has two or more digits."""
    return op == "*" and max(abs(x), abs(y)) >= 10


def parse_query(body: str) -> tuple[int, str, int] | None:
    """``"56*3"`` → ``(56, "*", 3)``; spaces are ignored; None if the body is not ``<int><op><int>``."""
    m = _QUERY_RE.fullmatch(body.replace(" ", ""))
    return None if m is None else (int(m.group(1)), m.group(2), int(m.group(3)))


def query_key(x: int, op: str, y: int) -> tuple[str, int, int]:
    """Canonical form of a sub-query: operands of ``+``/``*`` ordered, so ``5+56`` is ``56+5``."""
    return (op, *sorted((x, y))) if op in "+*" else (op, x, y)


def model_answer(model: PoolModel, x: int, op: str, y: int, *, seed: int, call_index: int) -> tuple[int, bool]:
    """The value ``model`` returns for ``x op y`` on call ``call_index`` of the episode with ``seed``.

    Right with probability ``model.accuracy(is_hard(x, op, y))``, else off by a slip from ``SLIPS``;
    the draw is a ``random.Random`` seeded by a string of (seed, call index, model, query), which
    Python hashes with SHA-512, so it does not depend on ``PYTHONHASHSEED``.

    Returns:
        ``(value, correct)``.
    """
    rng = random.Random(f"routing:{seed}:{call_index}:{model.name}:{x}{op}{y}")
    truth = apply(x, op, y)
    if rng.random() < model.accuracy(is_hard(x, op, y)):
        return truth, True
    return truth + rng.choice(SLIPS), False


def chain_values(start: int, hops: list[tuple[str, int]]) -> list[int]:
    """``[x0, x1, ..., xH]``: the start and the value after each hop (left to right)."""
    xs = [start]
    for op, b in hops:
        xs.append(apply(xs[-1], op, b))
    return xs


def format_question(start: int, hops: list[tuple[str, int]]) -> str:
    """``7, [("*", 8), ("+", 5)]`` → ``"7 *8 +5=?"``."""
    return f"{start}" + "".join(f" {op}{b}" for op, b in hops) + "=?"


def parse_question(text: str) -> tuple[int, list[tuple[str, int]]]:
    """Inverse of :func:`format_question` on the part after ``|``; ValueError naming the text if malformed."""
    q = text.rpartition("|")[2]
    m = _QUESTION_RE.fullmatch(q)
    if m is None:
        raise ValueError(f"not a routing prompt (expected like '...|7 *8 +5=?'): {text[:80]!r}")
    return int(m.group(1)), [(h[0], int(h[1:])) for h in m.group(2).split()]


def last_answer(text: str) -> str | None:
    """Body of the last ``<answer>...</answer>`` in ``text`` (stripped), or None."""
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    return None if start < 0 else text[start + len("<answer>"):end].strip()


def judge(answer: str | None, truth: int) -> Verdict:
    """Verdict of a final answer: ``ok``, ``wrong_value``, ``parse_error`` (not an integer), ``no_answer``."""
    if answer is None:
        return Verdict(0.0, False, None, "no_answer")
    if not re.fullmatch(r"-?\d{1,12}", answer):
        return Verdict(0.0, False, None, "parse_error")
    value = int(answer)
    ok = value == truth
    return Verdict(1.0 if ok else 0.0, ok, str(value), "ok" if ok else "wrong_value")


# --------------------------------------------------------------------------- the environment
class RoutingEnv(ToolEnv):
    """One routing episode (see the module docstring). Deterministic given (problem, pool, seed)."""

    def __init__(self, start: int, hops: list[tuple[str, int]], pool: tuple[PoolModel, ...], *, seed: int):
        self.pool = {m.name: m for m in pool}
        self.tools = tuple(self.pool)
        self.seed = int(seed)
        values = chain_values(start, hops)
        self.truth = values[-1]
        self.hop_keys = [query_key(x, op, b) for x, (op, b) in zip(values, hops)]
        self.reset(None)

    def reset(self, prompt: Prompt | None) -> str:
        self.calls, self.solved, self.final = 0, set(), None
        self.done = False
        return ""

    def step(self, action_text: str) -> StepResult:
        if self.done:  # the rollout stops at done; a caller that goes on gets told, never an exception
            return StepResult("error: the episode is over", 0.0, True,
                              {"malformed": True, "tool_call": False, **self._zero_info()})
        result = super().step(action_text)
        if result.info.get("malformed") and "model" not in result.info:
            result = StepResult(result.observation, result.reward, result.done,
                                {**result.info, **self._zero_info()})
        return result

    @staticmethod
    def _zero_info() -> dict[str, Any]:
        return {"model": None, "cost": 0.0, "latency": 0.0, "hard": False, "correct": False, "useful": False}

    def call_tool(self, name: str, body: str) -> StepResult:
        q = parse_query(body)
        if q is None:
            return StepResult(f"error: <{name}> takes a query like 56*3, got {body[:20]!r}", self.malformed_reward,
                              False, {**self._zero_info(), "model": name, "malformed": True, "tool_call": False})
        model = self.pool[name]
        value, correct = model_answer(model, *q, seed=self.seed, call_index=self.calls)
        self.calls += 1
        key = query_key(*q)
        useful = correct and key in self.hop_keys and key not in self.solved
        if useful:
            self.solved.add(key)
        return StepResult(f"={value}", 0.0, False,
                          {"model": name, "cost": model.cost, "latency": model.latency, "hard": is_hard(*q),
                           "correct": correct, "useful": useful})

    def answer(self, body: str) -> StepResult:
        self.final, self.done = body, True
        v = self.outcome()
        return StepResult("", v.reward, True, {**self._zero_info(), "correct": v.correct, "useful": v.correct})

    def outcome(self) -> Verdict:
        return judge(self.final, self.truth)


# --------------------------------------------------------------------------- the episodic task
def _check(name: str, ok: bool, value: Any, need: str) -> None:
    if not ok:
        raise ValueError(f"routing: {name} must be {need}, got {value!r}")


@TASKS.register("routing", paper="Router-R1: Teaching LLMs Multi-Round Routing and Aggregation via "
                "Reinforcement Learning", arxiv="2506.09033")
class Routing:
    """Multi-hop arithmetic answered by routing hops to a pool of noisy local models (episodic task).

    Problems are drawn from one seeded stream (start in [2, 9], hop count in [min_hops, max_hops],
    each hop ``+`` or ``*`` with an operand in [2, 9]), duplicates skipped; the first n_test form
    ``test``, then ``validation``, ``train``, ``sft`` (disjoint). Ids are ``<split>-<index:05d>``.

    Args (keyword-only):
        seed: seed of the problem stream.
        min_hops, max_hops: hops per problem (1..4).
        n_train, n_validation, n_test, n_sft: split sizes.
        costs, latencies, acc_easy, acc_hard: the pool, one entry per model ``m1..mK``.
        demo_policy: which model an SFT demonstration routes each hop to: ``random`` (uniform over
            the pool, so the base model tries every model and RL has a frontier to find),
            ``expert`` (the cheapest model that is always right on the hop's difficulty),
            ``cheapest``, ``priciest``.
        max_turns: turn budget (None: ``max_hops + 2``: one call per hop, the answer, one spare).
        show_pool: start prompts with the pool's descriptors (Router-R1 conditions on them). The pool
            is fixed for a task, so they add no information for a model trained on this task alone;
            ``false`` halves the testbed's episode length (and its SFT and RL time).
    """

    name = "routing"
    answer_marker = None

    def __init__(self, *, seed: int = 0, min_hops: int = 2, max_hops: int = 3, n_train: int = 2000,
                 n_validation: int = 200, n_test: int = 200, n_sft: int = 0,
                 costs: tuple[float, ...] = (1.0, 3.0, 8.0), latencies: tuple[float, ...] = (1.0, 2.0, 4.0),
                 acc_easy: tuple[float, ...] = (1.0, 1.0, 1.0), acc_hard: tuple[float, ...] = (0.3, 0.7, 1.0),
                 demo_policy: DemoPolicy = "random", max_turns: int | None = None, show_pool: bool = True):
        _check("seed", isinstance(seed, int) and seed >= 0, seed, "an integer >= 0")
        _check("min_hops", isinstance(min_hops, int) and 1 <= min_hops <= 4, min_hops, "an integer in [1, 4]")
        _check("max_hops", isinstance(max_hops, int) and min_hops <= max_hops <= 4, max_hops,
               f"an integer in [min_hops={min_hops}, 4]")
        self.seed, self.min_hops, self.max_hops = seed, min_hops, max_hops
        self.sizes = {"train": n_train, "validation": n_validation, "test": n_test, "sft": n_sft}
        for split, n in self.sizes.items():
            _check(f"n_{split}", isinstance(n, int) and n >= 0, n, "an integer >= 0")
        k = len(costs)
        _check("costs", 1 <= k <= 9, costs, "1 to 9 prices (one per model)")
        for key, vals, lo, hi in (("costs", costs, 0.0, math.inf), ("latencies", latencies, 0.0, math.inf),
                                  ("acc_easy", acc_easy, 0.0, 1.0), ("acc_hard", acc_hard, 0.0, 1.0)):
            _check(key, len(vals) == k, vals, f"{k} numbers, one per model like costs")
            for v in vals:
                _check(key, isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       and lo <= v <= hi, vals, f"finite numbers in [{lo}, {hi}]")
        self.pool = tuple(PoolModel(f"m{i + 1}", float(e), float(h), float(c), float(t))
                          for i, (e, h, c, t) in enumerate(zip(acc_easy, acc_hard, costs, latencies)))
        _check("demo_policy", demo_policy in ("random", "expert", "cheapest", "priciest"), demo_policy,
               "one of 'random', 'expert', 'cheapest', 'priciest'")
        self.demo_policy = demo_policy
        _check("max_turns", max_turns is None or (isinstance(max_turns, int) and max_turns >= 1), max_turns,
               "an integer >= 1 or None")
        self.max_turns = max_turns if max_turns is not None else max_hops + 2
        self.header = ";".join(m.descriptor() for m in self.pool)
        _check("show_pool", isinstance(show_pool, bool), show_pool, "true or false")
        self.show_pool = show_pool
        self._splits: dict[str, list[Prompt]] | None = None

    @property
    def max_episode_cost(self) -> float:
        """The most an episode can spend: the priciest call on every turn but the answer's."""
        return max(m.cost for m in self.pool) * max(1, self.max_turns - 1)

    # ------------------------------------------------------------------ problems
    def _generate(self) -> dict[str, list[Prompt]]:
        rng = random.Random(self.seed)
        total = sum(self.sizes.values())
        capacity = sum(8 * 16 ** h for h in range(self.min_hops, self.max_hops + 1))
        if total > capacity:
            raise ValueError(f"routing: {total} problems asked for but only {capacity} distinct ones exist "
                             f"with {self.min_hops}..{self.max_hops} hops; ask for fewer or allow more hops")
        seen: set[str] = set()
        kept: list[tuple[int, list[tuple[str, int]]]] = []
        while len(kept) < total:
            start = rng.randint(2, 9)
            hops = [(rng.choice(OPS), rng.randint(2, 9)) for _ in range(rng.randint(self.min_hops, self.max_hops))]
            q = format_question(start, hops)
            if q not in seen:
                seen.add(q)
                kept.append((start, hops))
        out, at = {}, 0
        for split in ("test", "validation", "train", "sft"):
            chunk, at = kept[at:at + self.sizes[split]], at + self.sizes[split]
            prefix = f"{self.header}|" if self.show_pool else ""
            out[split] = [Prompt(id=f"{split}-{i:05d}", text=prefix + format_question(s, h),
                                 meta={"start": s, "hops": [[op, b] for op, b in h],
                                       "answer": chain_values(s, h)[-1]})
                          for i, (s, h) in enumerate(chunk)]
        return out

    def prompts(self, split: str) -> list[Prompt]:
        if split not in SPLITS:
            raise ValueError(f"routing: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if self._splits is None:
            self._splits = self._generate()
        return list(self._splits[split])

    def _problem(self, prompt: Prompt) -> tuple[int, list[tuple[str, int]]]:
        meta = prompt.meta or {}
        if "start" in meta and "hops" in meta:
            return int(meta["start"]), [(str(op), int(b)) for op, b in meta["hops"]]
        return parse_question(prompt.text)  # e.g. a prompt rebuilt from an eval file

    # ------------------------------------------------------------------ episodes
    def make_env(self, prompt: Prompt, *, seed: int) -> RoutingEnv:
        start, hops = self._problem(prompt)
        return RoutingEnv(start, hops, self.pool, seed=seed)

    def _route(self, hard: bool, rng: random.Random) -> PoolModel:
        if self.demo_policy == "random":
            return rng.choice(self.pool)
        if self.demo_policy == "cheapest":
            return min(self.pool, key=lambda m: (m.cost, m.name))
        if self.demo_policy == "priciest":
            return max(self.pool, key=lambda m: (m.cost, m.name))
        best = max(m.accuracy(hard) for m in self.pool)  # expert: cheapest among the most accurate
        return min((m for m in self.pool if m.accuracy(hard) == best), key=lambda m: (m.cost, m.name))

    def episode_demonstration(self, prompt: Prompt, rng: random.Random) -> list[tuple[str, str]]:
        """A demonstration played through the real environment: per hop a thought naming the hop's
        difficulty and a call routed by ``demo_policy``, each query built on the value the previous
        call returned (right or not), then ``<answer>`` with the last value."""
        start, hops = self._problem(prompt)
        env = self.make_env(prompt, seed=rng.randrange(2 ** 31))
        env.reset(prompt)
        out, x = [], start
        for op, b in hops:
            hard = is_hard(x, op, b)
            action = f"{'hard' if hard else 'easy'} " + format_action(self._route(hard, rng).name, f"{x}{op}{b}")
            obs = env.step(action).observation
            out.append((action, obs))
            x = int(obs[1:])
        action = format_action("answer", str(x))
        out.append((action, env.step(action).observation))
        return out

    # ------------------------------------------------------------------ Task protocol
    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        """Judge the last ``<answer>...</answer>`` of a bare text against the chain's value."""
        start, hops = self._problem(prompt)
        return judge(last_answer(completion), chain_values(start, hops)[-1])

    def solutions(self, prompt: Prompt) -> list[str]:
        start, hops = self._problem(prompt)
        return [str(chain_values(start, hops)[-1])]

    def demonstration(self, prompt: Prompt, rng: Any) -> None:
        return None

    def charset(self) -> str:
        """Printable ASCII without tabs and newlines: prompts, actions, values and error messages."""
        return "".join(sorted(set(string.ascii_letters + string.digits + string.punctuation + " ")))
