"""Loss aggregation: turn a per-token loss matrix into the scalar the optimizer sees.

Contract (``entrolab.types``): ``agg(loss_BT, mask_BT, *, num_tokens, num_seqs) -> scalar``.
``num_tokens`` and ``num_seqs`` count the valid tokens and the sequences of the whole
*mini-batch* (one optimizer step), not of the micro-batch being aggregated. Every mode is
therefore a sum over the micro-batch's rows divided by a mini-batch constant, and summing the
results of the micro-batches of a mini-batch gives exactly the mini-batch loss: gradient
accumulation needs no extra rescaling. (verl and TRL normalise by micro-batch counts and then
divide by the number of accumulation steps, which is only exact when every micro-batch has the
same token count; see ``anchor-verl.md`` / ``anchor-trl.md``.)

Modes (X = loss, m = mask, |o_b| = valid tokens of sequence b):

* ``token_mean``           Σ_bt X m / num_tokens                      (DAPO, verl default)
* ``seq_mean_token_mean``  (1/num_seqs) Σ_b (Σ_t X m / |o_b|)         (original GRPO)
* ``seq_mean_token_sum``   (1/num_seqs) Σ_b Σ_t X m
* ``constant_norm``        Σ_bt X m / (num_seqs · constant)            (Dr.GRPO)

An empty sequence (|o_b| = 0) contributes 0 and still counts in ``num_seqs``.
"""

from __future__ import annotations

import torch

from entrolab.objectives._util import as_bool_mask, check_positive, zero_invalid
from entrolab.registry import AGGREGATIONS


def _check(loss_BT: torch.Tensor, mask_BT: torch.Tensor, num_tokens: int, num_seqs: int) -> torch.Tensor:
    if loss_BT.shape != mask_BT.shape:
        raise ValueError(f"loss_BT has shape {tuple(loss_BT.shape)} but mask_BT has {tuple(mask_BT.shape)}")
    mask_BT = as_bool_mask(mask_BT)
    if num_tokens < 0 or num_seqs < 0:
        raise ValueError(f"num_tokens and num_seqs must be >= 0, got {num_tokens}, {num_seqs}")
    if int(mask_BT.sum()) > num_tokens:
        raise ValueError(
            f"num_tokens={num_tokens} is smaller than the {int(mask_BT.sum())} valid tokens of this micro-batch; "
            "it must count the whole mini-batch"
        )
    if loss_BT.shape[0] > num_seqs:
        raise ValueError(
            f"num_seqs={num_seqs} is smaller than the {loss_BT.shape[0]} sequences of this micro-batch; "
            "it must count the whole mini-batch"
        )
    return mask_BT


def token_mean(loss_BT: torch.Tensor, mask_BT: torch.Tensor, *, num_tokens: int, num_seqs: int) -> torch.Tensor:
    """Σ_bt loss·mask / num_tokens: every token of the mini-batch weighs the same (DAPO Eq. 8)."""
    mask_BT = _check(loss_BT, mask_BT, num_tokens, num_seqs)
    return zero_invalid(loss_BT, mask_BT).sum() / max(num_tokens, 1)


def seq_mean_token_mean(loss_BT: torch.Tensor, mask_BT: torch.Tensor, *, num_tokens: int, num_seqs: int) -> torch.Tensor:
    """(1/num_seqs) Σ_b mean_t loss: every sequence weighs the same (GRPO, DeepSeekMath Eq. 3)."""
    mask_BT = _check(loss_BT, mask_BT, num_tokens, num_seqs)
    len_B = mask_BT.sum(-1).clamp(min=1).to(loss_BT.dtype)
    return (zero_invalid(loss_BT, mask_BT).sum(-1) / len_B).sum() / max(num_seqs, 1)


def seq_mean_token_sum(loss_BT: torch.Tensor, mask_BT: torch.Tensor, *, num_tokens: int, num_seqs: int) -> torch.Tensor:
    """(1/num_seqs) Σ_b Σ_t loss: sequence sums, averaged over sequences."""
    mask_BT = _check(loss_BT, mask_BT, num_tokens, num_seqs)
    return zero_invalid(loss_BT, mask_BT).sum() / max(num_seqs, 1)


def constant_norm(
    loss_BT: torch.Tensor, mask_BT: torch.Tensor, *, num_tokens: int, num_seqs: int, constant: float
) -> torch.Tensor:
    """Σ_bt loss·mask / (num_seqs · constant) (Dr.GRPO, "Understanding R1-Zero-Like Training", Eq. 2).

    Dr.GRPO divides by a fixed generation budget so no sequence is length-normalised. We take
    the constant from the recipe rather than the padded length of the tensor (verl's
    ``seq-mean-token-sum-norm`` divides by the padded length, which changes with dynamic
    batching: a pitfall listed in the spec).
    """
    mask_BT = _check(loss_BT, mask_BT, num_tokens, num_seqs)
    return zero_invalid(loss_BT, mask_BT).sum() / (max(num_seqs, 1) * constant)


@AGGREGATIONS.register("token_mean", paper="DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
                       arxiv="2503.14476")
class TokenMean:
    """Token mean over the mini-batch: Σ loss·mask / num_tokens."""

    def __init__(self) -> None:  # no hyperparameters: unknown recipe keys are errors
        pass

    def __call__(self, loss_BT, mask_BT, *, num_tokens: int, num_seqs: int) -> torch.Tensor:
        return token_mean(loss_BT, mask_BT, num_tokens=num_tokens, num_seqs=num_seqs)


@AGGREGATIONS.register(
    "seq_mean_token_mean",
    paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
    arxiv="2402.03300",
)
class SeqMeanTokenMean:
    """Per-sequence token mean, averaged over the mini-batch's sequences (original GRPO)."""

    def __init__(self) -> None:  # no hyperparameters: unknown recipe keys are errors
        pass

    def __call__(self, loss_BT, mask_BT, *, num_tokens: int, num_seqs: int) -> torch.Tensor:
        return seq_mean_token_mean(loss_BT, mask_BT, num_tokens=num_tokens, num_seqs=num_seqs)


@AGGREGATIONS.register("seq_mean_token_sum", paper="baseline")
class SeqMeanTokenSum:
    """Per-sequence token sum, averaged over the mini-batch's sequences."""

    def __init__(self) -> None:  # no hyperparameters: unknown recipe keys are errors
        pass

    def __call__(self, loss_BT, mask_BT, *, num_tokens: int, num_seqs: int) -> torch.Tensor:
        return seq_mean_token_sum(loss_BT, mask_BT, num_tokens=num_tokens, num_seqs=num_seqs)


@AGGREGATIONS.register("constant_norm", paper="Understanding R1-Zero-Like Training: A Critical Perspective",
                       arxiv="2503.20783", aliases=("dr_grpo_norm",))
class ConstantNorm:
    """Dr.GRPO: token sum divided by num_seqs × a fixed constant (the generation budget).

    Args:
        constant: the fixed normaliser, in tokens. Set it to ``rollout.max_new_tokens`` (the
            default, 48, is the recipe schema's default budget).
    """

    def __init__(self, *, constant: float = 48.0):
        check_positive("constant", constant)
        self.constant = float(constant)

    def __call__(self, loss_BT, mask_BT, *, num_tokens: int, num_seqs: int) -> torch.Tensor:
        return constant_norm(loss_BT, mask_BT, num_tokens=num_tokens, num_seqs=num_seqs, constant=self.constant)
