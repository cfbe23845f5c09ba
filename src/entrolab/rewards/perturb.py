"""A fixed, seeded reward perturbation δ·u(prompt id, canonical answer) for the policy-cliff experiment.

"The Policy Cliff: A Theoretical Analysis of Reward-Policy Maps in Large Language Models" (Xu, arXiv
2507.20150). The paper's sensitivity is
S = TV(π_r, π_{r+δ}) / ‖δ‖_∞ for a small perturbation δ of the reward function. To measure it on our
runs, a second run adds this term to the recipe's reward: r'(x, y) = r(x, y) + δ·u(x, a(y)), where a(y)
is the canonical answer the verifier extracted and u ∈ [−1, 1) a deterministic hash of
(seed, prompt id, answer). So ‖δ·u‖_∞ ≤ |δ|, the same answer to the same prompt always gets the same
shift (a perturbation of the reward *function*, not noise), and the term draws no random numbers: two
runs from one seed differ only through δ, and δ = 0 gives exactly the unperturbed reward.

The hash is BLAKE2b of a JSON encoding of ``[seed, prompt_id, answer]``, not Python's ``hash``
(salted per process for strings), so u is identical across processes, machines and Python versions.
Unparsed completions share one answer class ``"<none>"`` (the key the diagnostics use), so they are
perturbed like any other answer.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch

from entrolab.registry import REWARDS
from entrolab.rewards.verifier import ensure_verdicts
from entrolab.types import Metrics, RolloutBatch, Task

NONE_ANSWER = "<none>"  # answer class of unparsed completions (as in the eval JSON and diagnostics)
_MANTISSA = 2 ** 53     # u takes 2^53 evenly spaced values: every one is an exact float64


def perturbation_unit(prompt_id: str, answer: str | None, *, seed: int = 0) -> float:
    """u(prompt_id, answer) ∈ [−1, 1): a uniform-looking, reproducible value per (seed, prompt, answer).

    u = 2·k / 2^53 − 1 with k the top 53 bits of BLAKE2b-64(JSON ``[seed, prompt_id, answer]``); the
    JSON list keeps the three fields apart (``("ab", "c")`` and ``("a", "bc")`` hash differently).

    Args:
        prompt_id: the prompt's stable id (``Prompt.id``).
        answer: canonical answer, or None for an unparsed completion (hashed as ``"<none>"``).
        seed: selects one perturbation direction among many (same seed, same u everywhere).
    """
    key = json.dumps([int(seed), str(prompt_id), NONE_ANSWER if answer is None else str(answer)],
                     ensure_ascii=True, separators=(",", ":"))
    digest = hashlib.blake2b(key.encode("ascii"), digest_size=8).digest()
    k = int.from_bytes(digest, "big") >> 11  # 64 − 11 = 53 bits
    return 2.0 * k / _MANTISSA - 1.0


@torch.no_grad()
def perturbation(prompt_ids: list[str], answers: list[str | None], *, delta: float = 0.01,
                 seed: int = 0) -> torch.Tensor:
    """δ·u(prompt_id_b, answer_b) per completion (Policy Cliff, §17.1: r + δ with ‖δ‖_∞ ≤ |δ|).

    Args:
        prompt_ids: B prompt ids (the completion's prompt).
        answers: B canonical answers (None = unparsed).
        delta: perturbation size δ (0 gives exact zeros).
        seed: hash seed (see :func:`perturbation_unit`).
    Returns:
        values_B: float32 [B] in [−|δ|, |δ|].
    """
    if len(prompt_ids) != len(answers):
        raise ValueError(f"perturbation: {len(prompt_ids)} prompt ids for {len(answers)} answers")
    u = [perturbation_unit(p, a, seed=seed) for p, a in zip(prompt_ids, answers)]
    return (float(delta) * torch.tensor(u, dtype=torch.float64)).to(torch.float32)


@REWARDS.register("perturbed", paper="The Policy Cliff: A Theoretical Analysis of Reward-Policy Maps in "
                  "Large Language Models", arxiv="2507.20150")
class PerturbedReward:
    """δ·u(prompt id, canonical answer), u ∈ [−1, 1) from a seeded hash: add it to a recipe's reward.

    Used by the policy-cliff experiment (benchmarks/policy_cliff.py, docs/diagnostics.md): train once
    with ``delta: 0`` and once with a small δ, from the same seed, and compare the two policies. Needs
    verdicts (computed with ``task.verify`` if missing). Logs ``reward/perturbed_abs_mean``. Sets
    ``batch.extras["reward_delta"] = delta``, so the run's rollout dump records δ for ``diagnose``
    (the configured δ: with a term weight w ≠ 1 the reward moves by w·δ).
    """

    def __init__(self, *, delta: float = 0.01, seed: int = 0):
        if not math.isfinite(float(delta)):
            raise ValueError(f"delta must be a finite number, got {delta}")
        self.delta, self.seed = float(delta), int(seed)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        verdicts = ensure_verdicts(batch, task)
        ids = [batch.prompts[int(g)].id for g in batch.group_id_B.tolist()]
        values_B = perturbation(ids, [v.answer for v in verdicts], delta=self.delta, seed=self.seed)
        batch.extras["reward_delta"] = self.delta  # read by diagnostics.from_batch.batch_records
        return values_B, {"reward/perturbed_abs_mean": float(values_B.abs().mean()) if values_B.numel() else 0.0}
