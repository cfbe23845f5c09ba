"""RiskPO: Mixed Value-at-Risk advantages over bundles of questions, with a tracked-quantile state.

Ren et al., "Risk-based Policy Optimization via Verifiable Reward for LLM Post-Training"
(arXiv 2510.00911); formulas follow the released code (see docs/methods/riskpo.md).

Deliberate differences from upstream:

* the quantile tracker really feeds the advantage in ``track``/``mix`` mode. Upstream writes the
  tracked quantiles into the batch *after* computing the advantage, on a batch rebuilt every step,
  so the advantage always falls back to per-bundle empirical quantiles. Here the tracker's value
  *before* this batch's update is used (initialised from this batch on the first call), then the
  tracker is updated with this batch. As upstream, the tracker takes ONE SGD step per RL step over
  all paper scores of the batch (not one per bundle), and the first call only initialises it;
* ``sum_mean`` credit weights are clamped to ``[−credit_clip, credit_clip]`` (upstream divides by a
  sum of signed deviations that can nearly cancel, giving weights like 9 and −8);
* the paper-score std normalisation is skipped when that std is below ``1e-6`` (a zero-std bundle
  with tracked quantiles would otherwise be divided by 1e-6).
"""

from __future__ import annotations

import torch

from entrolab.advantages.common import adv_metrics, group_index, group_mean, group_std, require_rewards
from entrolab.registry import ADVANTAGES
from entrolab.types import Metrics, RolloutBatch

CREDITS = ("uniform", "score", "std", "sum_mean")
QMODES = ("track", "batch", "mix")


class QuantileTracker:
    """Stochastic quantile estimates at fixed levels (pinball-loss SGD): ``q_k += lr·(α_k − mean 1[X < q_k])``.

    Initialised on the first ``update`` from the empirical quantiles of that sample (no SGD step on
    it). Checkpointable.
    """

    def __init__(self, levels: tuple[float, ...], *, lr: float = 0.1):
        self.levels = torch.tensor(levels, dtype=torch.float64)
        self.lr = float(lr)
        self.q: torch.Tensor | None = None

    def init_from(self, x: torch.Tensor) -> None:
        self.q = torch.quantile(x.double(), self.levels)

    def update(self, x: torch.Tensor) -> None:
        x = x.double()
        if self.q is None:
            self.init_from(x)
            return
        below = (x[None, :] < self.q[:, None]).double().mean(-1)
        self.q = self.q + self.lr * (self.levels - below)

    def state_dict(self) -> dict:
        return {"q": None if self.q is None else self.q.clone(), "levels": self.levels.clone(), "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.q = None if state["q"] is None else state["q"].clone().double()


def mvar_weights(x_P: torch.Tensor, q_d: float, q_u: float, *, a_d: float = 0.2, a_u: float = 0.8, omega: float = 1.5,
                 mixing: bool = True, natural_baseline: bool = False) -> torch.Tensor:
    """Per-paper likelihood-ratio weights of the Mixed VaR objective.

    ``g_R = (X − q_d)^+ − (X − q_u)^+`` (+ ``q_d − q_u`` with ``natural_baseline``),
    ``a_R = g_R/(α_u − α_d + 1e-6)``; with ``mixing``: ``a_C = −(q_d − X)^+/(α_d + 1e-6)`` and
    ``a = (ω·a_C + a_R)/(ω + 1)`` (the gradients of RVaR and CVaR; MVaR = (ω·CVaR + RVaR)/(1 + ω)).

    Args:
        x_P: [P] paper scores; q_d, q_u: the lower/upper quantiles at levels α_d < α_u.
    """
    x = x_P.double()
    g = (x - q_d).clamp(min=0) - (x - q_u).clamp(min=0)
    if natural_baseline:
        g = g + (q_d - q_u)
    a = g / (a_u - a_d + 1e-6)
    if mixing:
        a_c = -(q_d - x).clamp(min=0) / (a_d + 1e-6)
        a = (omega * a_c + a) / (omega + 1)
    return a


@ADVANTAGES.register("riskpo", paper="Risk-based Policy Optimization via Verifiable Reward for LLM Post-Training",
                     arxiv="2510.00911")
class RiskPO:
    """RiskPO: bundle consecutive prompts, score "papers" across the bundle, weight by Mixed VaR, credit members.

    Bundles: prompts in batch order (sorted group ids), ``bundle_size`` at a time (the last may be
    smaller). Paper j of a bundle = the j-th response of each of its prompts; ``X_j`` = sum of their
    rewards. Responses beyond the smallest group size of the bundle get 0. Quantile statistics are
    per bundle (``batch``) or tracked across steps (``track``) or their average (``mix``).
    Logs ``riskpo/q_down``, ``riskpo/q_up`` (the tracker's values used for this batch).
    """

    def __init__(self, *, bundle_size: int = 5, q_down: float = 0.2, q_up: float = 0.8, omega: float = 1.5,
                 mixing: bool = True, natural_baseline: bool = False, credit: str = "sum_mean",
                 quantile_mode: str = "track", lr_q: float = 0.1, norm_by_std: bool = True, credit_clip: float = 1.0):
        if bundle_size < 1:
            raise ValueError(f"bundle_size must be >= 1, got {bundle_size}")
        if not 0.0 < q_down < q_up < 1.0:
            raise ValueError(f"need 0 < q_down < q_up < 1, got {q_down}, {q_up}")
        if credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {credit!r}")
        if quantile_mode not in QMODES:
            raise ValueError(f"quantile_mode must be one of {QMODES}, got {quantile_mode!r}")
        if omega < 0 or credit_clip <= 0:
            raise ValueError("omega must be >= 0 and credit_clip > 0")
        self.bundle_size, self.q_down, self.q_up, self.omega = int(bundle_size), q_down, q_up, omega
        self.mixing, self.natural_baseline, self.credit = mixing, natural_baseline, credit
        self.quantile_mode, self.norm_by_std, self.credit_clip = quantile_mode, norm_by_std, credit_clip
        self.tracker = QuantileTracker((q_down, q_up), lr=lr_q)

    def papers(self, group_id_B: torch.Tensor) -> list[tuple[list[list[int]], int]]:
        """Per bundle: the batch rows of each prompt (in batch order) and the number of papers P."""
        inv_B, count_K = group_index(group_id_B)  # dense ids follow sorted group ids = prompt order
        rows_K = [(inv_B == k).nonzero().squeeze(-1).tolist() for k in range(count_K.numel())]
        out = []
        for s in range(0, len(rows_K), self.bundle_size):
            bundle = rows_K[s:s + self.bundle_size]
            out.append((bundle, min(len(r) for r in bundle)))
        return out

    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, Metrics]:
        r = require_rewards(batch, "riskpo").double()
        gid = batch.group_id_B.cpu()
        inv_B, count_K = group_index(gid)
        mean_B, std_B = group_mean(r, inv_B, count_K), group_std(r, inv_B, count_K)
        bundles = self.papers(gid)
        scores = [torch.stack([sum(r[rows[j]] for rows in bundle) for j in range(P)]) for bundle, P in bundles]
        all_x = torch.cat(scores) if scores else None
        first = self.tracker.q is None
        if first and all_x is not None:  # upstream: step 1 initialises from every paper score of the batch
            self.tracker.init_from(all_x)
        tq = self.tracker.q.clone() if self.tracker.q is not None else None
        adv = torch.zeros_like(r)
        for (bundle, P), x in zip(bundles, scores):
            bq = torch.quantile(x, torch.tensor([self.q_down, self.q_up], dtype=torch.float64))
            q = {"batch": bq, "track": tq, "mix": None if tq is None else (bq + tq) / 2}[self.quantile_mode]
            a = mvar_weights(x, float(q[0]), float(q[1]), a_d=self.q_down, a_u=self.q_up, omega=self.omega,
                             mixing=self.mixing, natural_baseline=self.natural_baseline)
            if self.norm_by_std and P > 1 and float(x.std()) > 1e-6:
                a = a / (x.std() + 1e-6)
            for j in range(P):
                members = [rows[j] for rows in bundle]
                dev = torch.stack([r[b] - mean_B[b] for b in members])
                for k, b in enumerate(members):
                    adv[b] = a[j] * self._credit(k, b, r, std_B, dev, len(bundle))
        if not first and all_x is not None:
            # update after use: one pinball-loss step per RL step over all papers (upstream ray_trainer)
            self.tracker.update(all_x)
        adv = adv.float()
        out = adv_metrics(adv)
        if tq is not None:
            out.update({"riskpo/q_down": float(tq[0]), "riskpo/q_up": float(tq[1])})
        return adv, out

    def _credit(self, k: int, b: int, r: torch.Tensor, std_B: torch.Tensor, dev: torch.Tensor, n: int) -> float:
        if self.credit == "uniform":
            return 1.0
        if self.credit == "score":
            return 0.5 if r[b] > 0 else 1.5
        if self.credit == "std":
            s = float(std_B[b])
            return 1.0 / ((s if s > 1e-3 else 1.0) + 1e-6)
        den = float(dev.sum())
        w = 1.0 / n if abs(den) <= 1e-6 else float(dev[k]) / den
        return max(-self.credit_clip, min(self.credit_clip, w))

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
