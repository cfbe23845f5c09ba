"""BARFI: learned blending weights of a primary reward and auxiliary rewards (arXiv 2310.19007).

Gupta et al. learn a reward ``r_φ = φ_p·r_p + Σ_i φ_i·r_aux,i`` by a bi-level problem: the inner
learner maximises ``J_φ(θ)`` (policy gradient on ``r_φ``), the outer one maximises the primary
objective ``J_p(θ(φ))`` of the resulting policy, with an implicit gradient at the inner fixed point.
We use a documented **first-order, one-step** approximation that needs nothing but the rollout
batch the reward stage already sees (no second backward pass, no trainer branch):

1. *One unrolled inner step.* ``θ' = θ + α F⁻¹ ∇_θ J_φ(θ)`` (a natural-gradient step, F the Fisher
   matrix of the policy). Since ``∇_θ J_φ = Σ_k φ_k ∇_θ J_k`` is linear in φ, to first order in α

       ∂J_p(θ')/∂φ_k = α ⟨∇_θ J_p(θ), F⁻¹ ∇_θ J_k(θ)⟩ + O(α²).

2. *Per-sequence inner product.* With compatible advantages (Sutton et al. 2000; Kakade 2001, the
   natural policy gradient) that Fisher inner product is the covariance of the two rewards under the
   policy, prompt by prompt: ``⟨∇J_p, F⁻¹∇J_k⟩ = E_x Cov_{y∼π(·|x)}(r_p(x, y), r_k(x, y))``. For a
   tabular softmax policy this is exact (tested against autograd through the unrolled step in
   ``tests/rewards/test_rewards_barfi.py``); for an LM it is the approximation we make, and it is
   what the sampled groups estimate without any gradient: per prompt group, the unbiased (ddof 1)
   sample covariance of ``r_k`` with ``r_p``, averaged over the batch's groups (``alignment_grad``).

3. *Projected ascent on a simplex.* GRPO divides each group's advantages by their std, so the scale
   of ``r_φ`` does not matter, only the mix: φ lives on ``{Σ_k φ_k = 1, φ_k ≥ 0, φ_p ≥ floor}`` (the
   floor keeps the true reward in the blend, as the paper's pitfalls ask), updated by
   ``φ ← Π(φ + lr·g)`` with the Euclidean projection ``project_weights``. α is absorbed into ``lr``.

What this approximation can and cannot see: an auxiliary reward that is *anti*-aligned with the
primary one (pays behaviour the primary one does not) gets a negative covariance and loses weight at
once; but a one-step look-ahead never values an auxiliary reward above the primary one itself
(``Cov(r_k, r_p) ≤ Var(r_p)`` for the [0, 1] rewards here), and it is blind in groups where the
primary reward is constant (all wrong), which is where the paper's helpful heuristics matter. The
paper's implicit gradient at the inner fixed point is needed for that.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from entrolab.registry import REWARDS
from entrolab.rewards.compose import call_term
from entrolab.types import Metrics, RolloutBatch, Task

PAPER = "Behavior Alignment via Reward Function Optimization"
ARXIV = "2310.19007"


# --------------------------------------------------------------------------- pure functions
def alignment_grad(values_KB: torch.Tensor, primary_B: torch.Tensor, group_id_B: torch.Tensor) -> torch.Tensor:
    """First-order outer gradient of BARFI's one-step look-ahead, one entry per reward (see module doc).

    ``g_k = (1/|𝒢|) Σ_{g ∈ 𝒢} 1/(n_g − 1) Σ_{b ∈ g} (r_k,b − r̄_k,g)(r_p,b − r̄_p,g)``: the unbiased
    within-group covariance of reward k with the primary reward, averaged over the groups 𝒢 of the
    batch that have at least two members (a group of one has no covariance estimate). Scope: the
    whole rollout batch given. Unbiased for ``E_x Cov_π(r_k, r_p)`` (tested by enumeration).

    Args:
        values_KB: [K, B] reward values (the primary reward may be one of the rows).
        primary_B: [B] primary reward.
        group_id_B: [B] prompt-group id of each sequence.

    Returns:
        g_K: [K] float64 (zeros if no group has two members).
    """
    v = values_KB.double()
    p = primary_B.double()
    out = torch.zeros(v.shape[0], dtype=torch.float64)
    n_groups = 0
    for g in torch.unique(group_id_B):
        idx = (group_id_B == g).nonzero().flatten()
        n = idx.numel()
        if n < 2:
            continue
        vg, pg = v[:, idx], p[idx]
        out += ((vg - vg.mean(1, keepdim=True)) * (pg - pg.mean())).sum(1) / (n - 1)
        n_groups += 1
    return out / n_groups if n_groups else out


def project_weights(phi_K: torch.Tensor, *, floor: float = 0.0) -> torch.Tensor:
    """Euclidean projection onto ``{φ : Σ_k φ_k = 1, φ_k ≥ 0, φ_0 ≥ floor}`` (entry 0 = primary).

    Shift ``ψ = φ − floor·e_0`` and project ψ onto the simplex of total ``1 − floor`` by the
    sort-and-threshold rule of Duchi et al. (ICML 2008): ``ψ_k ← max(ψ_k − τ, 0)``.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    lower = torch.zeros_like(phi_K, dtype=torch.float64)
    lower[0] = floor
    v = phi_K.double() - lower
    total = 1.0 - floor
    if total <= 0:  # floor 1: everything on the primary reward
        return lower
    u = torch.sort(v, descending=True).values
    css = torch.cumsum(u, 0) - total
    k = torch.arange(1, v.numel() + 1, dtype=torch.float64)
    rho = int((u - css / k > 0).nonzero().max())  # the largest k with u_k > (Σ_{j≤k} u_j − total)/k
    tau = css[rho] / (rho + 1)
    return (v - tau).clamp(min=0.0) + lower


# --------------------------------------------------------------------------- the reward term
@REWARDS.register("barfi", paper=PAPER, arxiv=ARXIV)
class BARFIReward:
    """``r_φ = φ_p·r_p + Σ_i φ_i·r_aux,i`` with φ learned online by BARFI's one-step outer gradient.

    ``primary`` and each of ``auxiliary`` are reward blocks (``{name: verifier}``; an optional
    ``label`` names the term in metrics, default its name). Each call: score the batch with every
    reward, move φ by ``lr · alignment_grad`` projected onto the simplex with ``φ_p ≥ floor``
    (before blending, so the update this batch feeds is the one the look-ahead chose φ for), then
    blend. φ is checkpointed (exact resume). ``learn: false`` freezes φ at ``init`` (a fixed blend).

    Logs ``barfi/phi/<label>`` (weight after this step's update), ``barfi/align/<label>`` (``g_k``),
    ``barfi/<label>`` (raw batch mean of each reward) and the members' own metrics.
    """

    def __init__(self, *, primary: Any = "verifier", auxiliary: Sequence[Any] = (), lr: float = 1.0,
                 floor: float = 0.2, init: Sequence[float] | None = None, learn: bool = True):
        if not auxiliary:
            raise ValueError("barfi needs at least one auxiliary reward block in 'auxiliary'")
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], got {floor}")
        self.members = [_build(primary, "primary")] + [_build(a, f"auxiliary.{i}") for i, a in enumerate(auxiliary)]
        labels = [m[0] for m in self.members]
        if len(set(labels)) != len(labels):
            raise ValueError(f"barfi: reward labels must be unique, got {labels}; give each a distinct 'label'")
        k = len(self.members)
        if init is None:
            init = [1.0 / k] * k
        if len(init) != k or any(not float(x) >= 0 for x in init) or abs(sum(init) - 1.0) > 1e-6 or init[0] < floor:
            raise ValueError(f"init must be {k} weights >= 0 summing to 1 with init[0] (primary) >= floor "
                             f"{floor}, got {list(init)}")
        self.phi_K = torch.tensor([float(x) for x in init], dtype=torch.float64)
        self.lr, self.floor, self.learn = float(lr), float(floor), bool(learn)

    @property
    def labels(self) -> list[str]:
        return [m[0] for m in self.members]

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        metrics: Metrics = {}
        rows = []
        for label, fn in self.members:
            v_B, m = call_term(f"barfi reward '{label}'", fn, batch, task)
            metrics.update({f"barfi/{label}/{key.split('/', 1)[-1]}": val for key, val in m.items()})
            metrics[f"barfi/{label}"] = float(v_B.mean()) if v_B.numel() else 0.0
            rows.append(v_B)
        values_KB = torch.stack(rows).double()
        g_K = alignment_grad(values_KB, values_KB[0], batch.group_id_B)
        if self.learn:
            self.phi_K = project_weights(self.phi_K + self.lr * g_K, floor=self.floor)
        for label, phi, g in zip(self.labels, self.phi_K.tolist(), g_K.tolist()):
            metrics[f"barfi/phi/{label}"] = phi
            metrics[f"barfi/align/{label}"] = g
        return (self.phi_K[:, None] * values_KB).sum(0).float(), metrics

    @property
    def requires(self) -> frozenset:
        return frozenset().union(*(getattr(fn, "requires", frozenset()) for _, fn in self.members))

    def state_dict(self) -> dict:
        return {"phi": self.phi_K.tolist(),
                "members": [fn.state_dict() if hasattr(fn, "state_dict") else None for _, fn in self.members]}

    def load_state_dict(self, state: dict) -> None:
        phi = [float(x) for x in state["phi"]]
        if len(phi) != len(self.members):
            raise ValueError(f"barfi checkpoint has {len(phi)} weights, the recipe {len(self.members)} rewards")
        self.phi_K = torch.tensor(phi, dtype=torch.float64)
        for (_, fn), st in zip(self.members, state["members"]):
            if st is not None and hasattr(fn, "load_state_dict"):
                fn.load_state_dict(st)


def _build(spec: Any, where: str) -> tuple[str, Any]:
    """``(label, reward)`` from a reward block, a bare name or a callable."""
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__), spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"barfi {where} must be a reward block with a 'name', got {spec!r}")
    params = dict(spec)
    name = params.pop("name")
    label = str(params.pop("label", None) or name.rsplit(".", 1)[-1])
    return label, REWARDS.build(name, params, where=where)
