"""Reward composition: weighted reward terms (each logged separately), then shapers in order.

``compute_rewards`` is the reward stage of the trainer. A reward term follows the contract
``reward(batch, task) -> (values_B, metrics)``; a shaper ``shaper(rewards_B, batch, task) ->
(rewards_B, metrics)``. A term with weight 0 is still computed, stored and logged, which is how a
study trains on a proxy reward while watching the true verifier (``reward/verifier``).

Errors are made to point at the data: a term that raises, or returns NaN/inf, is reported with
the term's name and the offending sample (index, prompt id, first 80 characters of the completion).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from entrolab.types import Metrics, Prompt, RolloutBatch, Task, Verdict

RewardFn = Callable[[RolloutBatch, Any], tuple[Any, Metrics]]
ShaperFn = Callable[[torch.Tensor, RolloutBatch, Any], tuple[torch.Tensor, Metrics]]


class RewardError(ValueError):
    """A reward term or shaper failed or produced a non-finite value; the message names the sample."""


def describe_sample(batch: RolloutBatch, i: int) -> str:
    """``sample i (prompt id '...', completion '...')`` with the completion cut at 80 characters."""
    try:
        pid = batch.prompts[int(batch.group_id_B[i])].id
    except (IndexError, AttributeError):
        pid = "?"
    text = batch.texts[i] if i < len(batch.texts) else ""
    cut = text[:80] + ("…" if len(text) > 80 else "")
    return f"sample {i} (prompt id {pid!r}, completion {cut!r})"


def as_reward_tensor(values: Any, batch: RolloutBatch, what: str) -> torch.Tensor:
    """Convert a term's output (tensor or sequence of numbers) to a float32 [B] tensor, checking it."""
    try:
        t = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise RewardError(f"{what} returned something that is not a list of numbers: {err}") from err
    if t.shape != (batch.batch_size,):
        raise RewardError(f"{what} returned shape {tuple(t.shape)}, expected ({batch.batch_size},)")
    check_finite(t, batch, what)
    return t


def check_finite(values_B: torch.Tensor, batch: RolloutBatch, what: str) -> None:
    """Raise ``RewardError`` naming the first sample whose value is NaN or ±inf."""
    bad = (~torch.isfinite(values_B)).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise RewardError(f"{what} gave {float(values_B[i])} for {describe_sample(batch, i)}")


def _locate_failure(fn: RewardFn, batch: RolloutBatch, task: Any) -> int | None:
    """Index of the first sample on which ``fn`` raises when called on that sample alone, or None."""
    for i in range(batch.batch_size):
        try:
            fn(batch.select(torch.tensor([i])), task)
        except Exception:  # noqa: BLE001 - we are only probing which sample fails
            return i
    return None


def call_term(name: str, fn: RewardFn, batch: RolloutBatch, task: Any) -> tuple[torch.Tensor, Metrics]:
    """Call one reward term, turning failures into a ``RewardError`` that names the sample."""
    what = f"reward term '{name}'"
    try:
        values, metrics = fn(batch, task)
    except RewardError:
        raise
    except Exception as err:
        # The batch-level call does not say which sample broke it: probe each sample alone (error path
        # only, so a stateful reward advancing its state here does not matter: the step is lost anyway).
        i = _locate_failure(fn, batch, task)
        where = (describe_sample(batch, i) if i is not None
                 else "a batch-level computation (no single sample fails alone)")
        raise RewardError(f"{what} raised {type(err).__name__}: {err} — on {where}") from err
    return as_reward_tensor(values, batch, what), dict(metrics or {})


def zscore(values_B: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """``(v − mean)/(std + eps)`` over the batch (population std); a constant term becomes all 0."""
    if values_B.numel() == 0 or bool(values_B.max() == values_B.min()):
        return torch.zeros_like(values_B)
    return (values_B - values_B.mean()) / (values_B.std(unbiased=False) + eps)


def compute_rewards(
    batch: RolloutBatch,
    task: Any,
    terms: Sequence[tuple[str, float, RewardFn]],
    *,
    shapers: Sequence[ShaperFn | tuple[str, ShaperFn]] = (),
    normalize: bool = False,
) -> tuple[torch.Tensor, Metrics]:
    """Weighted sum of reward terms, then shapers in order; sets ``batch.rewards_B``.

    ``r = Σ_k w_k · f_k(batch)`` (each ``f_k`` z-scored over the batch first when ``normalize``),
    then ``r ← shaper(r, batch, task)`` for each shaper. Raw term values are stored in
    ``batch.reward_terms[name]`` and logged as ``reward/<name>`` (batch mean of the raw values).

    Args:
        batch: the rollout batch (B sequences).
        task: the task (passed through to every term and shaper).
        terms: ``(name, weight, fn)`` triples; names must be unique.
        shapers: shapers, or ``(name, shaper)`` pairs (the name appears in error messages).
        normalize: z-score each term over the batch before weighting.

    Returns:
        ``(rewards_B, metrics)`` (float32, CPU) with ``reward/<name>``, the terms' own metrics and the
        shapers' metrics. ``reward/mean``/``reward/std`` of the final reward are logged by the trainer.
    """
    if not terms:
        raise ValueError("compute_rewards needs at least one reward term")
    names = [n for n, _, _ in terms]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"reward term names must be unique; repeated: {sorted(dup)}")
    metrics: Metrics = {}
    total_B = torch.zeros(batch.batch_size, dtype=torch.float32)
    for name, weight, fn in terms:
        if not math.isfinite(float(weight)):
            raise ValueError(f"reward term '{name}': weight {weight} is not finite")
        values_B, term_metrics = call_term(name, fn, batch, task)
        batch.reward_terms[name] = values_B
        metrics.update(term_metrics)
        metrics[f"reward/{name}"] = float(values_B.mean()) if values_B.numel() else 0.0
        total_B = total_B + float(weight) * (zscore(values_B) if normalize else values_B)
    for item in shapers:
        name, shaper = item if isinstance(item, tuple) else (getattr(item, "name", type(item).__name__), item)
        what = f"reward shaper '{name}'"
        try:
            out, shaper_metrics = shaper(total_B, batch, task)
        except RewardError:
            raise
        except Exception as err:
            raise RewardError(f"{what} raised {type(err).__name__}: {err}") from err
        total_B = as_reward_tensor(out, batch, what)
        metrics.update(shaper_metrics or {})
    batch.rewards_B = total_B
    return total_B, metrics


class PerSample:
    """Adapt a per-sample function ``fn(prompt, completion, verdict) -> float`` to the reward contract.

    Handy for user rewards (e.g. a deliberately flawed proxy). Each sample is scored separately, so
    an exception or a non-finite value is reported with that sample directly.
    """

    def __init__(self, fn: Callable[[Prompt, str, Verdict | None], float], *, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "per_sample")

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        out = []
        for i, text in enumerate(batch.texts):
            prompt = batch.prompts[int(batch.group_id_B[i])]
            verdict = batch.verdicts[i] if batch.verdicts is not None else None
            try:
                v = float(self.fn(prompt, text, verdict))
            except Exception as err:
                raise RewardError(f"reward '{self.name}' raised {type(err).__name__}: {err} — on "
                                  f"{describe_sample(batch, i)}") from err
            if not math.isfinite(v):
                raise RewardError(f"reward '{self.name}' gave {v} for {describe_sample(batch, i)}")
            out.append(v)
        return torch.tensor(out, dtype=torch.float32), {}
