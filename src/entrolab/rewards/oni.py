"""ONI: an intrinsic reward model learned online from a judge's annotations of the agent's own turns.

Zheng et al., "Online Intrinsic Rewards for Decision Making Agents from Large Language Model Feedback"
(arXiv 2410.23022). Each step the term (1) sends the new turns of the batch (action + observation) to
a judge, in a background thread; (2) applies the annotations of step ``t − lag`` (and older) to the
reward model, waiting for them if the judge is late; (3) scores every turn with the model:

    r_int(turn k) = coef · model(x_k) / N_k^β,     N_k = occurrences of x_k in the episode's turns 0..k

and returns, per episode, the sum (the paper's placement: a per-step reward whose undiscounted sum
is the episode's intrinsic return) or the mean over its turns. The env's reward is added by the
other terms (``verifier``) of the reward stage; this term's ``weight`` multiplies ``coef``.

Why ``lag``: the paper's LLM server annotates asynchronously, so which labels the model has seen at
a given step depends on timing. Here the labels of step t are applied exactly at step ``t + lag``
(``lag = 0``: synchronously, before scoring step t), never earlier and never later, so a run is
reproducible and resumes exactly whatever the judge's speed. Pending annotations are waited for in
``state_dict`` and checkpointed as resolved labels.

Without ``batch.extras["episodes"]`` (a single-turn task) each completion is one turn with an empty
observation and an empty ``info``.
"""

from __future__ import annotations

import concurrent.futures
import random
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from entrolab.registry import REWARDS, ConfigError
from entrolab.rewards.compose import RewardError
from entrolab.rewards.oni_judges import JUDGES, Turn, check_labels
from entrolab.rewards.oni_models import (ClassifierModel, HashingModel, RankingModel, count_discounts,
                                         preference_from_labels, text_key)
from entrolab.types import Metrics, RolloutBatch, Task

PAPER = "Online Intrinsic Rewards for Decision Making Agents from Large Language Model Feedback"


def batch_turns(batch: RolloutBatch) -> list[list[Turn]]:
    """The turns of each row: from ``extras["episodes"]`` (multi-turn), else one turn per completion."""
    episodes = batch.extras.get("episodes")
    if episodes is None:
        return [[Turn(text, "", {})] for text in batch.texts]
    if len(episodes) != batch.batch_size:
        raise RewardError(f"oni: batch.extras['episodes'] has {len(episodes)} episodes for {batch.batch_size} rows")
    out = []
    for b, ep in enumerate(episodes):
        actions, observations, infos = list(ep.actions), list(ep.observations), list(ep.infos)
        if not len(actions) == len(observations) == len(infos):
            raise RewardError(f"oni: episode of row {b} has {len(actions)} actions, {len(observations)} "
                              f"observations and {len(infos)} infos; expected one of each per turn")
        out.append([Turn(a, o, dict(i)) for a, o, i in zip(actions, observations, infos)])
    return out


@dataclass
class _Job:
    """The annotations asked for at ``step``: items (texts, or text pairs) and their labels when known."""

    step: int
    items: list[Any]
    future: concurrent.futures.Future | None
    labels: list[float | None] | None = None


@REWARDS.register("oni", paper=PAPER, arxiv="2410.23022")
class OniReward:
    """Intrinsic reward of an online model (hashing/classification/ranking) distilled from a judge (ONI).

    Args:
        variant: ``hashing`` (table of labels), ``classification`` (logistic regression on hashed
            n-grams) or ``ranking`` (Bradley–Terry on pairwise preferences); see ``oni_models``.
        judge: a name in ``oni_judges.JUDGES`` (``useful``, ``http``) or a dotted path to a judge factory.
        judge_args: keyword arguments of the judge's factory (``endpoint``, ``timeout`` for ``http``).
        lag: the labels of step t train the model at step ``t + lag`` exactly (0 = synchronous).
        coef: the intrinsic coefficient (the paper's ``c_int``).
        aggregate: the episode's intrinsic reward is the ``sum`` (paper) or the ``mean`` of its turns'.
        text: what the model reads of a turn: ``turn`` (action, newline, observation), ``action`` or
            ``observation`` (the paper reads the game's message, i.e. the observation).
        count_exponent: β of the episodic count scaling ``1/N^β`` (3 in the released code; 0 = off).
        unseen: hashing's reward for a text the judge has not labelled yet (0 in the paper).
        threshold: classification's reward is ``1[p > threshold]`` (paper: 0.5), or ``p`` if None.
        rank_normalize, rank_threshold: ranking's reward is ``z · 1[z > rank_threshold]`` with z = R
            normalised by its running mean and variance over every turn scored (paper: −0.5), or
            z itself (threshold None), or R raw (``rank_normalize: false``).
        dim, ngram: hashed character 1..ngram-gram features of the learned variants.
        lr, sgd_steps: full-batch gradient steps per update of the learned variants.
        max_examples: dataset cap of the learned variants (oldest dropped, counted in a metric).
        seed: seed of the ranking variant's pair sampling.
        wait_timeout: longest wait, in seconds, for one step's annotations before it is an error.
    """

    def __init__(self, *, variant: Literal["hashing", "classification", "ranking"] = "hashing",
                 judge: str = "useful", judge_args: dict[str, Any] | None = None, lag: int = 1,
                 coef: float = 1.0, aggregate: Literal["sum", "mean"] = "sum",
                 text: Literal["turn", "action", "observation"] = "turn", count_exponent: float = 3.0,
                 unseen: float = 0.0, threshold: float | None = 0.5, rank_normalize: bool = True,
                 rank_threshold: float | None = -0.5, dim: int = 1024, ngram: int = 3,
                 lr: float = 1.0, sgd_steps: int = 8, max_examples: int = 4096, seed: int = 0,
                 wait_timeout: float = 600.0):
        for name, value, least in (("lag", lag, 0), ("count_exponent", count_exponent, 0), ("dim", dim, 1),
                                   ("ngram", ngram, 1), ("sgd_steps", sgd_steps, 1), ("max_examples", max_examples, 1)):
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        if not wait_timeout > 0:
            raise ValueError(f"wait_timeout must be > 0 seconds, got {wait_timeout}")
        self.variant, self.lag, self.coef, self.aggregate, self.text = variant, int(lag), float(coef), aggregate, text
        self.count_exponent, self.wait_timeout = float(count_exponent), float(wait_timeout)
        self.judge_name = judge
        try:
            self.judge: Callable[..., Any] = JUDGES.build(judge, judge_args or {}, where="judge_args")
        except ConfigError as err:
            raise ValueError(str(err)) from err
        if variant == "hashing":
            self.model: Any = HashingModel(unseen=unseen)
        elif variant == "classification":
            self.model = ClassifierModel(dim=dim, n=ngram, lr=lr, steps=sgd_steps, threshold=threshold,
                                         max_examples=max_examples)
        else:
            self.model = RankingModel(dim=dim, n=ngram, lr=lr, steps=sgd_steps, max_examples=max_examples,
                                      normalize=rank_normalize, threshold=rank_threshold)
        self.rng = random.Random(seed)
        self.seen: set[str] = set()     # keys of texts annotated or pending (pointwise variants)
        self.pending: list[_Job] = []   # in submission (= step) order
        self.annotated = 0              # labels applied to the model so far
        self.abstained = 0              # None labels (the judge abstained) so far
        self.model_metrics: Metrics = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # -- annotation queue ------------------------------------------------------------------------
    def turn_text(self, turn: Turn) -> str:
        if self.text == "action":
            return turn.action
        if self.text == "observation":
            return turn.observation
        return f"{turn.action}\n{turn.observation}"

    def _label(self, turns: list[Turn]) -> list[float | None]:
        """Pointwise labels, checked (runs in the judge thread)."""
        return check_labels(self.judge(turns), len(turns), f"judge {self.judge_name!r}")

    def _compare(self, pairs: list[tuple[Turn, Turn]]) -> list[float | None]:
        """P(a ≻ b) per pair: the judge's ``compare`` if it has one, else from two pointwise labels."""
        if callable(getattr(self.judge, "compare", None)):
            return check_labels(self.judge.compare(pairs), len(pairs), f"judge {self.judge_name!r} (compare)")
        labels = self._label([t for pair in pairs for t in pair])
        return [None if a is None or b is None else preference_from_labels(a, b)
                for a, b in zip(labels[0::2], labels[1::2])]

    def _submit(self, step: int, turns_B: list[list[Turn]]) -> None:
        """Queue this batch's new annotations for the judge thread (what is asked is decided here, in order)."""
        distinct: dict[str, tuple[str, Turn]] = {}
        for row in turns_B:
            for turn in row:
                text = self.turn_text(turn)
                distinct.setdefault(text_key(text), (text, turn))
        if self.variant == "ranking":
            # Random disjoint pairs of this batch's distinct texts (an odd one out is not compared this
            # step): the paper sends subsampled pairs of the agent's observations to the LLM.
            order = list(distinct.values())
            self.rng.shuffle(order)
            pairs = [(order[i], order[i + 1]) for i in range(0, len(order) - 1, 2)]
            items: list[Any] = [(a[0], b[0]) for a, b in pairs]
            work, arg = self._compare, [(a[1], b[1]) for a, b in pairs]
        else:
            # Each distinct text is annotated once (the paper queues unseen messages only).
            new = [(k, v) for k, v in distinct.items() if k not in self.seen]
            self.seen.update(k for k, _ in new)
            items = [text for _, (text, _) in new]
            work, arg = self._label, [turn for _, (_, turn) in new]
        if not items:
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="oni-judge")
        self.pending.append(_Job(step, items, self._executor.submit(work, arg)))

    def _resolve(self, job: _Job) -> list[float | None]:
        if job.labels is None:
            try:
                job.labels = job.future.result(timeout=self.wait_timeout)
            except concurrent.futures.TimeoutError:
                raise RewardError(f"oni: judge {self.judge_name!r} did not annotate the turns of step {job.step} "
                                  f"within wait_timeout={self.wait_timeout} s") from None
            except Exception as err:  # noqa: BLE001 - surfaced with the step and the judge's name
                raise RewardError(f"oni: judge {self.judge_name!r} failed on the turns of step {job.step}: "
                                  f"{type(err).__name__}: {err}") from err
            job.future = None
        return job.labels

    def _apply_due(self, step: int) -> Metrics:
        """Train the model on every pending job of step ``s ≤ step − lag``, oldest first (waiting if late)."""
        applied: list[float] = []
        while self.pending and self.pending[0].step + self.lag <= step:
            job = self.pending[0]
            labels = self._resolve(job)
            kept = [(item, y) for item, y in zip(job.items, labels) if y is not None]
            self.abstained += len(labels) - len(kept)
            if kept:
                self.model_metrics = self.model.update([i for i, _ in kept], [y for _, y in kept])
                applied += [y for _, y in kept]
            self.annotated += len(kept)
            self.pending.pop(0)
        return {"oni/applied": float(len(applied)),
                "oni/applied_label_mean": sum(applied) / len(applied) if applied else 0.0}

    # -- the reward term -------------------------------------------------------------------------
    def turn_rewards(self, turns_B: list[list[Turn]]) -> list[list[float]]:
        """``coef · model(x_k) / N_k^β`` for every turn of every row (the model as it is now)."""
        texts = [[self.turn_text(t) for t in row] for row in turns_B]
        flat = self.model.rewards([x for row in texts for x in row]).tolist()
        out, start = [], 0
        for row in texts:
            disc = count_discounts([text_key(x) for x in row], exponent=self.count_exponent)
            out.append([self.coef * v * d for v, d in zip(flat[start:start + len(row)], disc)])
            start += len(row)
        return out

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        step = int(batch.step)
        turns_B = batch_turns(batch)
        self._submit(step, turns_B)
        metrics = self._apply_due(step)
        per_turn = self.turn_rewards(turns_B)
        agg = sum if self.aggregate == "sum" else (lambda v: sum(v) / len(v) if v else 0.0)
        values_B = torch.tensor([float(agg(row)) for row in per_turn], dtype=torch.float32)
        flat = [v for row in per_turn for v in row]
        metrics.update(self.model_metrics)
        metrics.update({
            "oni/annotated": float(self.annotated), "oni/abstained": float(self.abstained),
            "oni/pending_steps": float(len({j.step for j in self.pending})),
            "oni/turn_reward_mean": sum(flat) / len(flat) if flat else 0.0,
            "oni/turn_nonzero_frac": sum(v != 0 for v in flat) / len(flat) if flat else 0.0,
        })
        return values_B, metrics

    # -- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model, queue and counters; pending annotations are waited for and saved as labels."""
        pending = [{"step": j.step, "items": list(j.items), "labels": list(self._resolve(j))} for j in self.pending]
        internal = self.rng.getstate()
        return {"variant": self.variant, "model": self.model.state_dict(), "seen": sorted(self.seen),
                "pending": pending, "annotated": self.annotated, "abstained": self.abstained,
                "model_metrics": dict(self.model_metrics),
                "rng": {"version": internal[0], "state": list(internal[1]), "gauss": internal[2]}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["variant"] != self.variant:
            raise ValueError(f"oni: checkpoint holds a {state['variant']!r} model, the recipe asks for {self.variant!r}")
        self.model.load_state_dict(state["model"])
        self.seen = set(state["seen"])
        self.pending = [_Job(int(j["step"]), list(j["items"]), None, list(j["labels"])) for j in state["pending"]]
        self.annotated, self.abstained = int(state["annotated"]), int(state["abstained"])
        self.model_metrics = {k: float(v) for k, v in state["model_metrics"].items()}
        r = state["rng"]
        self.rng.setstate((int(r["version"]), tuple(int(x) for x in r["state"]), r["gauss"]))
