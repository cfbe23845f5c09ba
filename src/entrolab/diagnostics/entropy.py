"""Entropy diagnostics: token-level, answer-level, per phase, and distributions over steps.

Definitions follow "The Invisible Leash" (arXiv 2507.14843):
token-level entropy is the mean over valid generated tokens of the full-vocabulary next-token
entropy; answer-level entropy is the entropy of the empirical distribution of extracted final
answers over a prompt's samples, averaged over prompts. The phase split (scratchpad vs answer) is
the one PEAR uses: tokens before the task's answer marker vs from it on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from entrolab.diagnostics.inputs import NONE_ANSWER


def token_entropy_mean(entropy_BT: torch.Tensor, mask_BT: torch.Tensor) -> float:
    """Token-level entropy: mean of ``entropy_BT`` over valid tokens (a global token mean).

    Args:
        entropy_BT: [B, T] per-token full-vocabulary entropies (nats).
        mask_BT: [B, T] bool, True = valid generated token.
    Returns: the mean over valid tokens, or NaN when there are none.
    """
    if entropy_BT.shape != mask_BT.shape:
        raise ValueError(f"entropy_BT {tuple(entropy_BT.shape)} and mask_BT {tuple(mask_BT.shape)} differ in shape")
    n = int(mask_BT.sum())
    return float((entropy_BT * mask_BT).sum() / n) if n else math.nan


def softmax_entropy(logits_V: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary entropy −Σ_v π_v log π_v of softmax(logits) over the last axis (nats)."""
    logp = torch.log_softmax(logits_V.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def answer_entropy(counts: Mapping[str, int], *, unparsed: str = "category") -> float:
    """Answer-level entropy −Σ_a (n_a/n) log(n_a/n) of one prompt's answer counts (nats).

    Invisible Leash §12 (answer-level entropy). ``unparsed`` says what to do with samples whose
    answer did not parse (key ``"<none>"``): ``"category"`` counts them as one more answer,
    ``"drop"`` leaves them out (the entropy is then over parsed answers only).

    Args:
        counts: canonical answer → number of samples with that answer.
    Returns: the entropy, or NaN when no sample remains.
    """
    if unparsed not in ("category", "drop"):
        raise ValueError(f"unparsed must be 'category' or 'drop', got {unparsed!r}")
    if any(v < 0 for v in counts.values()):
        raise ValueError("answer counts must be >= 0")
    values = [int(v) for k, v in counts.items() if v > 0 and not (unparsed == "drop" and k == NONE_ANSWER)]
    n = sum(values)
    if n == 0:
        return math.nan
    return -sum((v / n) * math.log(v / n) for v in values)


def phase_entropy(entropy_T: Sequence[float], split: int) -> tuple[float, float]:
    """Mean token entropy of the scratchpad (tokens ``[0, split)``) and the answer (``[split, T)``).

    PEAR's phase split. Returns NaN for an empty phase.

    Args:
        entropy_T: per-token entropies of one completion.
        split: index of the first answer-phase token (0 ≤ split ≤ T).
    """
    if not 0 <= split <= len(entropy_T):
        raise ValueError(f"phase split {split} outside [0, {len(entropy_T)}]")
    think, answer = list(entropy_T[:split]), list(entropy_T[split:])
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return mean(think), mean(answer)


def quantile_summary(values: Sequence[float], *, qs: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> dict[str, float]:
    """Mean, std (population), min, max and quantiles of ``values`` (NaNs dropped).

    Used for "the distribution over steps": one summary per step of per-sequence statistics.
    """
    xs = torch.tensor([v for v in values if not math.isnan(v)], dtype=torch.float64)
    if xs.numel() == 0:
        return {"count": 0}
    out = {
        "count": int(xs.numel()),
        "mean": float(xs.mean()),
        "std": float(xs.std(unbiased=False)),
        "min": float(xs.min()),
        "max": float(xs.max()),
    }
    for q in qs:
        out[f"q{round(q * 100):02d}"] = float(torch.quantile(xs, q))
    return out
