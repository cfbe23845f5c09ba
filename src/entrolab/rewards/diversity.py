"""Group coverage reward: each sample is credited with its marginal gain in a submodular coverage function.

SubPO (Prajapat et al., "Submodular Reinforcement Learning", arXiv 2307.13372) replaces an additive
return by a submodular set function F of what was visited and credits each step with its marginal
gain ``F(s | S_prev) = F(S_prev ∪ {s}) − F(S_prev)``. Here the "visited set" is the set of canonical
answers a prompt's group has produced, and F is a weighted coverage function
``F(S) = Σ_{a ∈ ∪ cover(s)} w(a)`` (each answer counted once however often it is produced).
"""

from __future__ import annotations

from itertools import permutations
from typing import Hashable, Sequence

import torch

from entrolab.registry import REWARDS
from entrolab.rewards.verifier import ensure_verdicts
from entrolab.types import Metrics, RolloutBatch, Task


def coverage(sets: Sequence[frozenset], weights: dict[Hashable, float] | None = None) -> float:
    """Weighted coverage ``F(S) = Σ_{v ∈ ∪ sets} w(v)`` (w = 1 when ``weights`` is None)."""
    covered = frozenset().union(*sets) if sets else frozenset()
    return float(sum((weights or {}).get(v, 1.0) for v in covered))


def sequential_gains(sets: Sequence[frozenset], weights: dict[Hashable, float] | None = None) -> list[float]:
    """Marginal gain of each element over the elements before it (SubPO's greedy credit).

    Gains telescope: their sum is ``F`` of the whole sequence. Order-dependent: the first of two
    duplicates gets the credit.
    """
    seen: set = set()
    out = []
    for s in sets:
        new = s - seen
        out.append(float(sum((weights or {}).get(v, 1.0) for v in new)))
        seen |= s
    return out


def shapley_gains(sets: Sequence[frozenset], weights: dict[Hashable, float] | None = None) -> list[float]:
    """Expected marginal gain over a uniformly random order (the Shapley value of coverage).

    For a coverage function this has the closed form ``Σ_{v ∈ cover(s)} w(v)/n(v)`` with ``n(v)``
    the number of elements covering v, so duplicates share the credit; it is permutation invariant
    and still sums to ``F`` of the whole set.
    """
    count: dict = {}
    for s in sets:
        for v in s:
            count[v] = count.get(v, 0) + 1
    return [float(sum((weights or {}).get(v, 1.0) / count[v] for v in s)) for s in sets]


def brute_force_shapley(sets: Sequence[frozenset]) -> list[float]:
    """Average sequential gain over every permutation (exponential: for tests on tiny groups)."""
    n = len(sets)
    totals = [0.0] * n
    perms = list(permutations(range(n)))
    for order in perms:
        gains = sequential_gains([sets[i] for i in order])
        for pos, i in enumerate(order):
            totals[i] += gains[pos]
    return [t / len(perms) for t in totals]


@REWARDS.register("diversity", paper="Submodular Reinforcement Learning", arxiv="2307.13372")
class DiversityReward:
    """Credit each sample with its marginal gain in the coverage of its group's distinct answers.

    ``cover(sample) = {canonical answer}`` when the answer is correct (``correct_only``) or parsed,
    else ∅. ``credit="sequential"`` is SubPO's marginal gain in sampling order (first finder of an
    answer gets ``value``, later duplicates 0); ``credit="shapley"`` averages it over random orders
    (duplicates share ``value``), which is permutation invariant within the group.
    Logs ``reward/distinct_answers`` (mean coverage F per group).
    """

    #: Coverage is counted within a group; with groups of one every answer is "new", so the reward
    #: degenerates to a bonus for any (correct) answer: worth a warning, not an error.
    advised_group_size = 2

    def __init__(self, *, credit: str = "sequential", correct_only: bool = True, value: float = 1.0):
        if credit not in ("sequential", "shapley"):
            raise ValueError(f"credit must be 'sequential' or 'shapley', got {credit!r}")
        self.credit, self.correct_only, self.value = credit, bool(correct_only), float(value)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        verdicts = ensure_verdicts(batch, task)
        sets = [frozenset({v.answer}) if v.answer is not None and (v.correct or not self.correct_only)
                else frozenset() for v in verdicts]
        out = torch.zeros(batch.batch_size)
        gid = batch.group_id_B.tolist()
        groups: dict[int, list[int]] = {}
        for b, g in enumerate(gid):
            groups.setdefault(g, []).append(b)  # batch order = sampling order within a group
        fn = sequential_gains if self.credit == "sequential" else shapley_gains
        cov = []
        for rows in groups.values():
            member_sets = [sets[b] for b in rows]
            for b, gain in zip(rows, fn(member_sets)):
                out[b] = gain * self.value
            cov.append(coverage(member_sets))
        return out, {"reward/distinct_answers": sum(cov) / max(1, len(cov))}
