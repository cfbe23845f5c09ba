"""KL penalty to a frozen reference policy, with the k1/k2/k3 per-token estimators.

Schulman, "Approximating KL Divergence" (2020 blog note). With samples o_t ~ π_θ and
δ_t = log π_θ(o_t) − log π_ref(o_t), each estimator's expectation relates to KL(π_θ ‖ π_ref):

* k1 = δ                       unbiased, high variance, can be negative;
* k2 = ½ δ²                    biased (second order in δ), always ≥ 0, low variance;
* k3 = exp(−δ) − 1 + δ         unbiased, always ≥ 0 (verl ``low_var_kl``, TRL's estimator).

In the *loss* (this module: the ``kl_to_ref`` regularizer) β·k_t is added to each token's loss,
as in GRPO (DeepSeekMath Eq. 3) and TRL. In the *reward* (InstructGPT-style) the sequence sum
of k1 is subtracted from the reward before advantages; ``kl_estimate`` is the shared math.
"""

from __future__ import annotations

from typing import Literal

import torch

from entrolab.objectives._util import LOG_RATIO_CLAMP, as_bool_mask, check_positive, fmean, zero_invalid
from entrolab.registry import REGULARIZERS
from entrolab.types import Metrics, PolicyInputs

Estimator = Literal["k1", "k2", "k3"]
ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(
    logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor, *, estimator: Estimator = "k3", clamp: float = LOG_RATIO_CLAMP
) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from sampled-token log-probs.

    Args:
        logp_BT: log π_θ(o_t) [B, T] (gradient flows through it).
        ref_logp_BT: log π_ref(o_t) [B, T] (detached).
        estimator: ``k1`` (δ), ``k2`` (½δ²) or ``k3`` (e^{−δ} − 1 + δ), δ = log π_θ − log π_ref.
        clamp: δ is clamped to ±clamp before the exponential in k3 (overflow guard).
    Returns:
        kl_BT [B, T].
    """
    delta_BT = logp_BT - ref_logp_BT.detach()
    if estimator == "k1":
        return delta_BT
    if estimator == "k2":
        return 0.5 * delta_BT.square()
    if estimator == "k3":
        delta_BT = delta_BT.clamp(-clamp, clamp)
        return torch.expm1(-delta_BT) + delta_BT
    raise ValueError(f"unknown KL estimator '{estimator}'; valid: {', '.join(ESTIMATORS)}")


@REGULARIZERS.register("kl_to_ref", paper="Approximating KL Divergence (J. Schulman, 2020, blog note)",
                       aliases=("kl",))
class KLToRef:
    """Per-token KL penalty β·k(π_θ, π_ref) added to the loss (k1/k2/k3 estimator).

    Per-sequence weights: when the batch carries ``extras["kl_weight_B"]`` (written by the
    ``ares_hwe`` shaper with ``dynamic_kl``: β_d·relax per response, ARES arXiv 2510.08457), the
    token penalty is β·w_b·k_t, so ``beta: 1.0`` applies ARES's per-bucket coefficients as they are.

    Args:
        beta: coefficient β (GRPO used 0.04; TRL now defaults to 0, verl ``kl_loss_coef`` 0.001).
        estimator: ``k1``, ``k2`` or ``k3`` (default, as verl ``low_var_kl`` and TRL).
    Metrics: ``kl/ref`` (mean of the chosen estimator over valid tokens, before β and the weights);
    with weights also ``kl/weight_mean`` (mean w_b over the micro-batch's sequences).
    """

    requires = frozenset({"ref_logp"})

    def __init__(self, *, beta: float = 0.04, estimator: Estimator = "k3"):
        check_positive("beta", beta, allow_zero=True)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got '{estimator}'")
        self.beta, self.estimator = float(beta), estimator

    def __call__(self, inp: PolicyInputs) -> tuple[torch.Tensor, Metrics]:
        if inp.ref_logp_BT is None:
            raise ValueError("kl_to_ref needs ref_logp_BT (requires={'ref_logp'}); the trainer did not provide it")
        mask_BT = as_bool_mask(inp.mask_BT)
        kl_BT = kl_estimate(inp.logp_BT, inp.ref_logp_BT, estimator=self.estimator)
        metrics = {"kl/ref": fmean(kl_BT, mask_BT)}
        weight_B = inp.extras.get("kl_weight_B")
        if weight_B is None:
            return zero_invalid(self.beta * kl_BT, mask_BT), metrics
        if weight_B.shape != kl_BT.shape[:1]:
            raise ValueError(f"kl_to_ref: extras['kl_weight_B'] has shape {tuple(weight_B.shape)}, "
                             f"expected ({kl_BT.shape[0]},) (one weight per sequence)")
        weight_B = weight_B.detach().to(kl_BT)
        metrics["kl/weight_mean"] = float(weight_B.mean()) if weight_B.numel() else 0.0
        return zero_invalid(self.beta * weight_B[:, None] * kl_BT, mask_BT), metrics
