"""Reward ensembles: mean, worst-case (WCO) and uncertainty-weighted (UWO) aggregation of members."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from entrolab.registry import REWARDS
from entrolab.rewards.compose import call_term
from entrolab.rewards.ctrl_u import UNCERTAINTY_KEY, member_disagreement
from entrolab.rewards.par import RunningStats
from entrolab.types import Metrics, RolloutBatch, Task

MODES = ("mean", "wco", "uwo")
NORMS = ("none", "batch", "running")


def ensemble_aggregate(scores_KB: torch.Tensor, *, mode: str = "mean", lam: float = 0.1) -> torch.Tensor:
    """Aggregate K member scores per sample (Coste et al., arXiv 2310.02743).

    ``mean``: (1/K) Σ_k r_k; ``wco``: min_k r_k; ``uwo``: (1/K) Σ_k r_k − λ·Var_k(r_k), with the
    population variance (ddof 0; the upstream repo mixes ddof 0 for best-of-n and 1 for PPO, which
    makes λ non-transferable — we fix ddof 0).

    Args:
        scores_KB: [K, B] member scores (already on comparable scales).
        mode: ``mean`` | ``wco`` | ``uwo``. lam: λ of UWO (repo: 0.5 best-of-n, 0.1 PPO).
    """
    if mode == "mean":
        return scores_KB.mean(0)
    if mode == "wco":
        return scores_KB.min(0).values
    if mode == "uwo":
        return scores_KB.mean(0) - lam * scores_KB.var(0, unbiased=False)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


@REWARDS.register("ensemble", paper="Reward Model Ensembles Help Mitigate Overoptimization", arxiv="2310.02743")
class EnsembleReward:
    """Aggregate several member rewards (reward models or any reward terms) by mean, WCO or UWO.

    ``members`` is a list of reward blocks (``{name: reward_model, path: ...}``) built from the
    reward registry, or reward callables. Each member is normalised before aggregation (WCO is
    scale-sensitive): ``member_norm="running"`` z-scores with running mean/std of everything that
    member has scored (current batch included; checkpointed), ``"batch"`` over the current batch,
    ``"none"`` not at all. Logs ``ensemble/member<k>`` (raw mean), the members' own metrics as
    ``ensemble/member<k>/<name>``, and ``ensemble/disagreement`` (mean over samples of the members'
    std after normalisation). With K ≥ 2 members it also stores each sample's unbiased variance across
    the normalised members in ``batch.extras["reward_uncertainty_B"]`` (read by the ``ctrl_u`` shaper).
    """

    def __init__(self, *, members: Sequence[Any] = (), mode: str = "mean", lam: float = 0.1,
                 member_norm: str = "running", eps: float = 1e-8):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if member_norm not in NORMS:
            raise ValueError(f"member_norm must be one of {NORMS}, got {member_norm!r}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if len(members) < 1:
            raise ValueError("ensemble needs at least one member")
        self.members = [_build_member(m, i) for i, m in enumerate(members)]
        self.mode, self.lam, self.member_norm, self.eps = mode, float(lam), member_norm, float(eps)
        self.stats = [RunningStats() for _ in self.members]

    def _normalise(self, k: int, v_B: torch.Tensor) -> torch.Tensor:
        if self.member_norm == "none":
            return v_B
        if self.member_norm == "batch":
            if v_B.numel() == 0:
                return v_B
            return (v_B - v_B.mean()) / (v_B.std(unbiased=False) + self.eps)
        self.stats[k].update(v_B)
        return (v_B - self.stats[k].mean) / (self.stats[k].std + self.eps)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        metrics: Metrics = {}
        rows = []
        for k, (label, fn) in enumerate(self.members):
            v_B, m = call_term(f"ensemble member {k} ({label})", fn, batch, task)
            # namespace member metrics so two members of the same kind do not overwrite each other
            metrics.update({f"ensemble/member{k}/{key.split('/', 1)[-1]}": val for key, val in m.items()})
            metrics[f"ensemble/member{k}"] = float(v_B.mean()) if v_B.numel() else 0.0
            rows.append(self._normalise(k, v_B))
        scores_KB = torch.stack(rows) if rows else torch.zeros(0, batch.batch_size)
        out = ensemble_aggregate(scores_KB, mode=self.mode, lam=self.lam)
        metrics["ensemble/disagreement"] = (float(scores_KB.std(0, unbiased=False).mean())
                                            if batch.batch_size else 0.0)
        if len(rows) >= 2:  # per-sample uncertainty for the ctrl_u shaper (mean pairwise Gaussian KL)
            batch.extras[UNCERTAINTY_KEY] = member_disagreement(scores_KB)
        return out, metrics

    @property
    def requires(self) -> frozenset:
        return frozenset().union(*(getattr(fn, "requires", frozenset()) for _, fn in self.members))

    def state_dict(self) -> dict:
        return {"stats": [s.state_dict() for s in self.stats],
                "members": [fn.state_dict() if hasattr(fn, "state_dict") else None for _, fn in self.members]}

    def load_state_dict(self, state: dict) -> None:
        for s, st in zip(self.stats, state["stats"]):
            s.load_state_dict(st)
        for (_, fn), st in zip(self.members, state["members"]):
            if st is not None and hasattr(fn, "load_state_dict"):
                fn.load_state_dict(st)


def _build_member(spec: Any, i: int) -> tuple[str, Any]:
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__), spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"ensemble member {i} must be a reward block with a 'name', got {spec!r}")
    params = dict(spec)
    name = params.pop("name")
    return name, REWARDS.build(name, params, where=f"members.{i}")
