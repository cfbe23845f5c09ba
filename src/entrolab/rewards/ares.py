"""ARES (AEPO stage): high-window-entropy (HWE) triggers and a difficulty-aware hierarchical entropy reward.

Chen et al., "ARES: Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level Entropy Shaping"
(arXiv 2510.08457); formulas follow the released code (see docs/methods/ares_hwe.md).

Deliberate differences from upstream (each listed in the spec as a pitfall):

* entropies are the full-vocabulary behaviour entropies (``batch.entropy_BT``), not a top-10 estimate;
* triggers are the *sampled* tokens (optionally restricted to a lexicon), not the top-1 token;
* the per-bucket target ``N*_d`` is an EMA of *previous* batches' bucket means, not the current
  batch mean (with which the dual update of ``α_d`` is inert: δ ≈ 0 up to rounding);
* the threshold, targets and ``α`` used for a batch are the values before that batch's update.
"""

from __future__ import annotations

import math
import re

import torch

from entrolab.registry import SHAPERS
from entrolab.rewards.segments import token_char_ends
from entrolab.rewards.verifier import ensure_verdicts
from entrolab.types import Metrics, RolloutBatch, Task

BUCKETS = ("easy", "medium", "hard")
# Per-bucket constants of the released reward (easy, medium, hard).
MARGIN_FRAC = {"easy": 0.15, "medium": 0.25, "hard": 0.35}
HUBER_KAPPA = {"easy": 2.0, "medium": 3.0, "hard": 4.0}
TEMP = {"easy": 2.0, "medium": 2.5, "hard": 3.0}
CAP_MUL = {"easy": 1.0, "medium": 1.0, "hard": 1.2}
RHO = {"easy": 0.6, "medium": 0.8, "hard": 1.0}


# --------------------------------------------------------------------------- pure functions
def forward_window_means(h_T: torch.Tensor, *, window: int = 4) -> torch.Tensor:
    """``ē_i = mean(h_{i+1..i+W})`` for every position i with W following tokens: [max(0, n − W)]."""
    n = h_T.shape[0]
    if n <= window:
        return torch.zeros(0)
    c = torch.cat([torch.zeros(1), h_T.double().cumsum(0)])
    i = torch.arange(n - window)
    return ((c[i + 1 + window] - c[i + 1]) / window).float()


def huber(x: float, kappa: float) -> float:
    """``x²/(2κ)`` if ``x ≤ κ`` else ``x − κ/2``."""
    return x * x / (2 * kappa) if x <= kappa else x - kappa / 2


def bucket_of(acc: float) -> str:
    """Difficulty from group accuracy: easy ≥ 2/3, medium ≥ 1/3, hard otherwise."""
    return "easy" if acc >= 2 / 3 else ("medium" if acc >= 1 / 3 else "hard")


def hierarchical_entropy_reward(n_hwe: float, target: float, bucket: str, correct: bool, *, alpha: float) -> float:
    """ARES hierarchical entropy reward ``e`` for one sample (released ``aepo.py`` logic).

    ``Δ = N − N*``, margin ``m = max(1, f_d·N*)``, ``cap = α_d·c_d``. Correct answers: easy penalise
    ``(Δ − m)^+`` (too many triggers), medium penalise ``(|Δ| − m)^+``, hard reward ``σ((Δ + m)/T)``
    when ``Δ ≥ −m`` and penalise the shortfall otherwise. Incorrect: ``+ρ_d·cap·σ((Δ − m)^+/T)``.
    """
    d = bucket
    delta = n_hwe - target
    m = max(1.0, MARGIN_FRAC[d] * target)
    kap, T, cap = HUBER_KAPPA[d], TEMP[d], alpha * CAP_MUL[d]
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    if not correct:
        return RHO[d] * cap * sig(max(0.0, delta - m) / T)
    if d == "easy":
        return -min(cap, cap * huber(max(0.0, delta - m), kap) / (m + kap))
    if d == "medium":
        return -min(cap, cap * huber(max(0.0, abs(delta) - m), kap) / (m + kap))
    if delta >= -m:
        return cap * sig((delta + m) / T)
    return -min(cap, 0.5 * cap * huber(-delta - m, kap) / (m + kap))


# --------------------------------------------------------------------------- the shaper
@SHAPERS.register("ares_hwe", paper="ARES: Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level "
                  "Entropy Shaping", arxiv="2510.08457")
class AresHWE:
    """Add ARES's hierarchical entropy reward (from HWE trigger counts and difficulty buckets).

    Optional ``dynamic_kl`` keeps a per-bucket KL coefficient β_d steered toward ``kl_target`` and
    writes per-sample KL weights ``β_d · relax`` to ``batch.extras["kl_weight_B"]`` for a KL
    regularizer that reads them. Metrics: ``ares/tau``, ``ares/hwe_mean``, ``ares/bonus``,
    ``ares/alpha_<bucket>``, ``ares/target_<bucket>``, ``ares/frac_<bucket>``, ``ares/kl_beta_<bucket>``.
    """

    name = "ares_hwe"

    def __init__(self, *, window: int = 4, tau_decay: float = 0.99, alpha_init: float = 0.5, alpha_lr: float = 0.05,
                 target_decay: float = 0.9, lexicon: list[str] | None = None, dynamic_kl: bool = False,
                 kl_target: float = 0.01, kl_update_every: int = 1, relax: float = 0.67):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not (0 <= tau_decay < 1 and 0 <= target_decay < 1):
            raise ValueError("tau_decay and target_decay must be in [0, 1)")
        if kl_target <= 0 or kl_update_every < 1:
            raise ValueError("kl_target must be > 0 and kl_update_every >= 1")
        self.window, self.tau_decay, self.alpha_lr, self.target_decay = int(window), tau_decay, alpha_lr, target_decay
        self.lexicon = [w.lower() for w in lexicon] if lexicon else None
        self.dynamic_kl, self.kl_target = dynamic_kl, kl_target
        self.kl_update_every, self.relax = kl_update_every, relax
        # Behaviour entropies always; behaviour and reference log-probs for the dynamic KL.
        self.requires = frozenset({"old_stats", "ref_logp"}) if dynamic_kl else frozenset({"old_stats"})
        self.tau: float | None = None
        self.alpha = {d: float(alpha_init) for d in BUCKETS}
        self.target: dict[str, float] = {}
        self.kl = {"log_beta": {d: 0.0 for d in BUCKETS}, "kl_ema": {}, "err_ema": {d: 0.0 for d in BUCKETS},
                   "calls": 0}

    # ------------------------------------------------------------ per-sample statistics
    def _candidates(self, batch: RolloutBatch, i: int, n_windows: int) -> list[int]:
        if self.lexicon is None:
            return list(range(n_windows))
        ends, _ = token_char_ends(batch, i)
        starts = {0 if t == 0 else ends[t - 1]: t for t in range(len(ends))}
        text = batch.texts[i].lower()
        out = []
        for w in self.lexicon:
            for mt in re.finditer(r"(?<!\w)" + re.escape(w), text):
                t = starts.get(mt.start())
                if t is not None and t < n_windows:
                    out.append(t)
        return sorted(set(out))

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        if batch.entropy_BT is None:
            raise ValueError("ares_hwe needs batch.entropy_BT (behaviour-policy token entropies)")
        verdicts = ensure_verdicts(batch, task)
        ent_BT, lengths = batch.entropy_BT.detach().float().cpu(), batch.lengths_B.tolist()
        windows = [forward_window_means(ent_BT[i, : lengths[i]], window=self.window) for i in range(batch.batch_size)]
        p95 = [float(torch.quantile(w, 0.95)) for w in windows if w.numel()]
        if self.tau is None:
            self.tau = sum(p95) / len(p95) if p95 else 0.0
        tau = self.tau
        n_hwe, soft = [], []
        for i, w in enumerate(windows):
            cand = [t for t in self._candidates(batch, i, w.numel())]
            vals = w[cand] if cand else torch.zeros(0)
            n_hwe.append(float((vals >= tau).sum()))
            soft.append(float((vals - tau).clamp(min=0).sum()))
        # difficulty per prompt from group accuracy
        gid = batch.group_id_B.tolist()
        members: dict[int, list[int]] = {}
        for b, g in enumerate(gid):
            members.setdefault(g, []).append(b)
        bucket_b, prompt_mean = [""] * len(gid), {}
        for g, rows in members.items():
            d = bucket_of(sum(verdicts[b].correct for b in rows) / len(rows))
            for b in rows:
                bucket_b[b] = d
            prompt_mean.setdefault(d, []).append(sum(n_hwe[b] for b in rows) / len(rows))
        bucket_mean = {d: sum(v) / len(v) for d, v in prompt_mean.items()}
        for d, mu in bucket_mean.items():
            self.target.setdefault(d, mu)  # first sight: the current mean (there is no past yet)
        targets = {d: float(round(self.target[d])) for d in bucket_mean}
        bonus = torch.tensor([hierarchical_entropy_reward(n_hwe[b], targets[bucket_b[b]], bucket_b[b],
                                                          verdicts[b].correct, alpha=self.alpha[bucket_b[b]])
                              for b in range(len(gid))], dtype=torch.float32)
        metrics = {"ares/tau": tau, "ares/hwe_mean": sum(n_hwe) / max(1, len(n_hwe)),
                   "ares/bonus": float(bonus.mean()) if bonus.numel() else 0.0}
        if self.dynamic_kl:
            metrics.update(self._kl_step(batch, bucket_b, soft, verdicts))
        # updates for the next batch (after use)
        for d, mu in bucket_mean.items():
            delta = (mu - targets[d]) if d != "hard" else (targets[d] - mu)
            self.alpha[d] = min(2.0, max(0.0, self.alpha[d] + self.alpha_lr * delta))
            self.target[d] = self.target_decay * self.target[d] + (1 - self.target_decay) * mu
        if p95:
            self.tau = self.tau_decay * self.tau + (1 - self.tau_decay) * float(torch.tensor(p95).median())
        for d in BUCKETS:
            metrics[f"ares/alpha_{d}"] = self.alpha[d]
            metrics[f"ares/frac_{d}"] = bucket_b.count(d) / max(1, len(bucket_b))
            if d in self.target:
                metrics[f"ares/target_{d}"] = self.target[d]
        return rewards_B + bonus, metrics

    # ------------------------------------------------------------ dynamic KL coefficients
    def _kl_step(self, batch: RolloutBatch, bucket_b: list[str], soft: list[float], verdicts) -> Metrics:
        """Per-bucket β_d: EMA of the bucket's mean sequence KL (k3, behaviour vs reference) vs the target."""
        if batch.old_logp_BT is None or batch.ref_logp_BT is None:
            raise ValueError("ares_hwe with dynamic_kl needs batch.old_logp_BT and batch.ref_logp_BT")
        st = self.kl
        beta = {d: math.exp(st["log_beta"][d]) for d in BUCKETS}
        weight = [beta[d] * (self.relax if d == "easy" and not v.correct and s >= 0.5 else 1.0)
                  for d, v, s in zip(bucket_b, verdicts, soft)]
        batch.extras["kl_weight_B"] = torch.tensor(weight, dtype=torch.float32)
        m = batch.mask_BT.cpu().float()
        delta = (batch.old_logp_BT - batch.ref_logp_BT).float().cpu().clamp(-20, 20)
        seq_kl = ((torch.expm1(-delta) + delta) * m).sum(-1) / m.sum(-1).clamp(min=1)
        st["calls"] += 1
        for d in set(bucket_b):
            kl = float(seq_kl[[b for b, x in enumerate(bucket_b) if x == d]].mean())
            st["kl_ema"][d] = 0.97 * st["kl_ema"].get(d, kl) + 0.03 * kl
            err = st["kl_ema"][d] / self.kl_target - 1.0
            err = 0.0 if abs(err) < 0.02 else err  # dead zone
            st["err_ema"][d] = 0.97 * st["err_ema"][d] + 0.03 * err
            if st["calls"] % self.kl_update_every == 0:
                e = max(-0.2, min(0.2, st["err_ema"][d]))
                st["log_beta"][d] = max(math.log(1e-4), min(math.log(1e2), st["log_beta"][d] + 0.05 * e))
        return {f"ares/kl_beta_{d}": beta[d] for d in BUCKETS}

    def state_dict(self) -> dict:
        return {"tau": self.tau, "alpha": dict(self.alpha), "target": dict(self.target),
                "kl": {"log_beta": dict(self.kl["log_beta"]), "kl_ema": dict(self.kl["kl_ema"]),
                       "err_ema": dict(self.kl["err_ema"]), "calls": self.kl["calls"]}}

    def load_state_dict(self, state: dict) -> None:
        self.tau = state["tau"]
        self.alpha, self.target = dict(state["alpha"]), dict(state["target"])
        self.kl = {"log_beta": dict(state["kl"]["log_beta"]), "kl_ema": dict(state["kl"]["kl_ema"]),
                   "err_ema": dict(state["kl"]["err_ema"]), "calls": int(state["kl"]["calls"])}
