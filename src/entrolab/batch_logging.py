"""What the trainer records about each rollout batch: step metrics and the diagnostics dump."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from entrolab.agents.metrics import episode_metrics
from entrolab.types import RolloutBatch


def batch_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Per-step metrics of a rewarded batch with advantages (definitions in docs/CONTRACTS.md)."""
    mask_BT = batch.mask_BT.to(batch.entropy_BT.device)
    n_tok = mask_BT.sum().clamp(min=1)
    lengths = batch.lengths_B.float()
    adv_B = batch.adv_BT.sum(-1) / batch.mask_BT.to(batch.adv_BT.device).sum(-1).clamp(min=1)
    out = {
        "reward/mean": float(batch.rewards_B.mean()),
        "reward/std": float(batch.rewards_B.std()) if batch.batch_size > 1 else 0.0,
        "reward/pass_rate": float(batch.correct_B.float().mean()),
        "policy/entropy": float((batch.entropy_BT * mask_BT).sum() / n_tok),  # mean over valid tokens
        "rollout/len_mean": float(lengths.mean()),
        "rollout/len_max": float(lengths.max()),
        "rollout/truncated_frac": sum(r == "length" for r in batch.stop_reasons) / batch.batch_size,
    }
    # 10–90 % range of the rollouts' rewards, over the whole rollout batch: the report's reward band
    # (mean ± std would leave [0, 1] for a 0/1 reward).
    q10, q90 = torch.quantile(batch.rewards_B.detach().double().cpu(), torch.tensor([0.1, 0.9], dtype=torch.float64))
    out["reward/q10"], out["reward/q90"] = float(q10), float(q90)
    if batch.ref_logp_BT is not None:  # k1 estimate of KL(π_old || π_ref) over sampled tokens
        out["kl/ref_k1"] = float(((batch.old_logp_BT - batch.ref_logp_BT) * mask_BT).sum() / n_tok)
    out["adv/zero_frac"] = float((adv_B.abs() < 1e-8).float().mean())
    out.update(episode_metrics(batch))  # agent/* for multi-turn episodes, nothing otherwise
    return out


def dump_rollouts(path: Path, batch: RolloutBatch, *, task: Any, tokenizer: Any, run: str) -> None:
    """Append the batch to ``path`` in the diagnostics schema (docs/diagnostics.md).

    Side-pass rows are left out (they sample another distribution); the policy log-probs of the
    last update pass (``extras["policy_logp_BT"]``) feed the clipping section.
    """
    from entrolab.diagnostics.from_batch import append_rollouts, batch_records

    side_B = batch.extras.get("side_pass_B")
    if side_B is not None and bool(side_B.any()):
        batch = batch.select((~side_B.cpu()).nonzero().squeeze(-1))
    marker = task.answer_marker
    split_B = None
    if marker:  # token index where the answer phase starts (exact for char-level tokenizers)
        split_B = [None if marker not in t else
                   len(tokenizer(t[:t.index(marker)], add_special_tokens=False)["input_ids"])
                   for t in batch.texts]
    records = batch_records(batch, run=run, task=task, phase_split_B=split_B,
                            policy_logp_BT=batch.extras.get("policy_logp_BT"))
    append_rollouts(path, records)
