"""The policy-gradient update on one rollout batch: mini-batches, micro-batches, one optimizer step each.

Per micro-batch: training forward → ``PolicyInputs`` → surrogate loss_BT → × token weights →
+ per-token regularizer loss_BT → aggregation with mini-batch-wide counts (so gradient accumulation
over micro-batches gives exactly the mini-batch gradient) → + scalar (0-dim) regularizer losses,
weighted by the micro-batch's sequence share (``scalar_share``) so each enters the mini-batch loss
once whatever the aggregation → backward. No stage is special-cased.

Every per-row batch extra (``types.is_row_extra``, e.g. ``kl_weight_B``) reaches the components in
``PolicyInputs.extras``, sliced to the micro-batch. Afterwards ``batch.extras["policy_logp_BT"]``
holds the log-probs of the last update pass (the forward before each optimizer step; CPU, detached),
for the clipping diagnostics; the metric ``policy/nll`` is −mean log π_θ over valid tokens of the
update forwards (the entropy proxy AEPO/DCPO steer on, AEPO arXiv 2510.08141 §3).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from entrolab.components import Components
from entrolab.models.forward import completion_stats
from entrolab.types import PolicyInputs, RolloutBatch, is_row_extra


class NonFiniteError(RuntimeError):
    """Raised when a loss or gradient norm is NaN/inf (the optimizer step is skipped), or when the
    weights are NaN/inf after a step (e.g. an infinite learning rate)."""


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True if no tensor holds NaN/inf: one reduction per tensor, one host sync (cheap next to a step)."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


@dataclass
class MetricMean:
    """Weighted running means of float metrics."""

    sums: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def add(self, metrics: dict[str, float], weight: float = 1.0) -> None:
        for k, v in metrics.items():
            v = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v * weight
            self.weights[k] = self.weights.get(k, 0.0) + weight

    def result(self) -> dict[str, float]:
        return {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}


@dataclass
class UpdateSettings:
    updates_per_batch: int = 1
    mini_batch_size: int | None = None
    micro_batch_size: int | None = None
    grad_clip: float | None = 1.0
    autocast: bool = False
    # tokens per chunk of the memory-lean log-prob path (0 = naive full-logits path); the trainer passes
    # the size it also scores with (``Trainer.logprob_chunk``), so on-policy ratios stay exactly 1
    logprob_chunk_size: int = 0


def micro_batch_loss(
    model: torch.nn.Module,
    comps: Components,
    batch: RolloutBatch,
    idx_B: torch.Tensor,
    *,
    num_tokens: float,
    num_seqs: float,
    generator: torch.Generator | None,
    requires: set[str],
    chunk_size: int = 0,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """Loss of rows ``idx_B`` of ``batch`` (already scaled for accumulation), its metrics, and the
    detached log-probs ``logp_BT`` and entropies ``entropy_BT`` of those rows under the current policy."""
    device = next(model.parameters()).device
    mask_BT = batch.mask_BT[idx_B].to(device)
    fwd = completion_stats(
        model, batch.prompt_ids_BL[idx_B], batch.mask_prompt_BL[idx_B], batch.completion_ids_BT[idx_B], mask_BT,
        temperature=batch.temperature, need_entropy=True,
        need_hidden="hidden" in requires, need_logits="logits" in requires, chunk_size=chunk_size,
        attn_BT=None if batch.attn_BT is None else batch.attn_BT[idx_B],
    )

    def rows(t):
        return None if t is None else t[idx_B].to(device)

    # No re-scoring forward (``batch.old_logp_BT`` None, allowed only for one optimizer step, see
    # ``update_policy``): this forward runs before the batch's only optimizer step, so it *is* the
    # behaviour policy's and its detached log-probs are old_logp exactly.
    old_logp_BT = rows(batch.old_logp_BT) if batch.old_logp_BT is not None else fwd.logp_BT.detach()
    inp = PolicyInputs(
        logp_BT=fwd.logp_BT, old_logp_BT=old_logp_BT, adv_BT=rows(batch.adv_BT),
        mask_BT=mask_BT, entropy_BT=fwd.entropy_BT, rewards_B=rows(batch.rewards_B),
        group_id_B=rows(batch.group_id_B), ref_logp_BT=rows(batch.ref_logp_BT),
        logits_BTV=fwd.logits_BTV, hidden_BTD=fwd.hidden_BTD, step=batch.step, generator=generator,
        extras={k: rows(v) for k, v in batch.extras.items() if is_row_extra(k, v, batch.batch_size)},
    )
    logp_BT = fwd.logp_BT.detach()
    n_valid = mask_BT.sum().clamp(min=1)
    metrics: dict[str, float] = {"policy/nll": float(-(logp_BT.float() * mask_BT).sum() / n_valid)}
    loss, m = policy_loss(comps, inp, num_tokens=num_tokens, num_seqs=num_seqs)
    metrics.update(m)
    return loss, metrics, logp_BT, fwd.entropy_BT.detach()


def policy_loss(comps: Components, inp: PolicyInputs, *, num_tokens: float,
                num_seqs: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective on one micro-batch: surrogate × token weights + per-token regularizers, aggregated
    with the mini-batch-wide counts, + scalar regularizers weighted by ``scalar_share``. Shared by our
    update and the TRL adapter (``entrolab.integrations.trl``), so both compute the same loss."""
    metrics: dict[str, float] = {}
    device = inp.logp_BT.device
    mask_BT = inp.mask_BT
    loss_BT, m = comps.surrogate(inp)
    metrics.update(m)
    for weight in comps.token_weights:
        weight_BT, m = weight(inp)
        loss_BT = loss_BT * weight_BT.detach()
        metrics.update(m)
    scalar = torch.zeros((), device=device)
    for i, reg in enumerate(comps.regularizers):
        reg_out, m = reg(inp)
        if reg_out.dim() == 0:  # a sequence/batch-level penalty: added once, after aggregation
            scalar = scalar + reg_out
        elif reg_out.shape == loss_BT.shape:
            loss_BT = loss_BT + reg_out
        else:
            raise ValueError(f"objective.regularizers.{i} ({type(reg).__name__}) returned shape "
                             f"{tuple(reg_out.shape)}; expected a 0-dim scalar or {tuple(loss_BT.shape)}")
        metrics.update(m)
    loss = comps.aggregation(loss_BT, mask_BT, num_tokens=num_tokens, num_seqs=num_seqs)
    return loss + scalar_share(int(mask_BT.shape[0]), num_seqs) * scalar, metrics


def scalar_share(micro_seqs: int, num_seqs: float) -> float:
    """Weight of a micro-batch's scalar regularizer loss: its share of the mini-batch's sequences.

    A regularizer that returns a 0-dim loss P (SIREN's β(Ĥ − H_0)², SAFE's gated KL) states a
    penalty on the batch it was given, computed from that micro-batch alone. Weighting each
    micro-batch's P_k by n_k / N (sequences) makes the weights sum to 1 over the mini-batch, so a
    mini-batch without micro-batching sees P exactly once, whatever the aggregation, and a split one
    sees Σ_k (n_k/N)·P_k. The sequence share is what verl applies to the whole micro-batch loss
    (``len(micro) / ppo_mini_batch_size`` under dynamic batching, ``1 / grad_accum`` otherwise), so
    these penalties scale across micro-batches exactly as in the upstream code.
    """
    return micro_seqs / max(num_seqs, 1.0)


def update_policy(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    comps: Components,
    batch: RolloutBatch,
    settings: UpdateSettings,
    *,
    generator: torch.Generator,
    requires: set[str],
) -> dict[str, float]:
    """Run ``updates_per_batch`` passes of mini-batch optimizer steps over ``batch``.

    Sets ``batch.extras["policy_logp_BT"]`` ([B, T] float32 CPU, 0 on pads): each row's log-probs
    from the last pass's forward, i.e. under the policy just before the optimizer step that used it.

    ``batch.old_logp_BT`` None means the trainer skipped the re-scoring forward: then exactly one
    optimizer step may use the batch (else raises ``ValueError``), each micro-batch's own forward
    provides old_logp, and afterwards ``batch.old_logp_BT``/``batch.entropy_BT`` hold that forward's
    log-probs/entropies (the behaviour policy's: the forward precedes the only step).
    """
    B = batch.batch_size
    mb = min(settings.mini_batch_size or B, B)
    micro = min(settings.micro_batch_size or mb, mb)
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if settings.autocast else nullcontext()
    means = MetricMean()
    n_opt_steps = 0
    policy_logp_BT = torch.zeros(batch.mask_BT.shape, dtype=torch.float32)
    rescored = batch.old_logp_BT is not None
    if not rescored and (settings.updates_per_batch != 1 or mb < B):
        raise ValueError("batch.old_logp_BT is None (re-scoring skipped) but the update takes more than one "
                         f"optimizer step (updates_per_batch={settings.updates_per_batch}, mini-batch {mb} of {B})")
    entropy_BT = None if rescored else torch.zeros(batch.mask_BT.shape, dtype=torch.float32)
    model.train()
    for epoch in range(settings.updates_per_batch):
        order_B = torch.randperm(B, generator=generator, device=generator.device).cpu() if mb < B else torch.arange(B)
        for start in range(0, B, mb):
            idx_M = order_B[start:start + mb]
            num_tokens = float(batch.mask_BT[idx_M].sum())
            num_seqs = float(len(idx_M))
            optimizer.zero_grad(set_to_none=True)
            loss_total = 0.0
            for ms in range(0, len(idx_M), micro):
                idx_U = idx_M[ms:ms + micro]
                with amp:
                    loss, metrics, logp_BT, ent_BT = micro_batch_loss(
                        model, comps, batch, idx_U, num_tokens=num_tokens, num_seqs=num_seqs,
                        generator=generator, requires=requires, chunk_size=settings.logprob_chunk_size)
                policy_logp_BT[idx_U] = logp_BT.float().cpu()  # the last pass's values survive
                if entropy_BT is not None:
                    entropy_BT[idx_U] = ent_BT.float().cpu()
                if not torch.isfinite(loss):
                    raise NonFiniteError(
                        f"non-finite loss ({float(loss.detach())}) at step {batch.step}, update pass {epoch}, "
                        f"mini-batch starting at row {start}")
                loss.backward()
                loss_total += float(loss.detach())
                share = float(batch.mask_BT[idx_U].sum()) / max(num_tokens, 1.0)
                means.add(metrics, weight=share)
            # Auxiliary losses of components (e.g. the likelihood reward's explicit ∇R_θ term), once per
            # mini-batch: ``auxiliary_loss(batch, idx_M) -> (loss or None, metrics)``.
            for _, comp in comps.keyed():
                aux = getattr(comp, "auxiliary_loss", None)
                if callable(aux):
                    with amp:
                        aux_loss, m = aux(batch, idx_M)
                    if aux_loss is not None:
                        if not torch.isfinite(aux_loss):
                            raise NonFiniteError(f"non-finite auxiliary loss at step {batch.step}")
                        aux_loss.backward()
                        loss_total += float(aux_loss.detach())
                        means.add(m)
            clip = settings.grad_clip if settings.grad_clip is not None else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            if not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                raise NonFiniteError(f"non-finite gradient norm at step {batch.step}, update pass {epoch}, "
                                     f"mini-batch starting at row {start}")
            optimizer.step()
            if not all_finite(params):  # finite gradients can still give NaN/inf weights (lr = inf, NaN clip)
                raise NonFiniteError(f"non-finite weights after the optimizer step at step {batch.step}, "
                                     f"update pass {epoch}, mini-batch starting at row {start}")
            n_opt_steps += 1
            means.add({"loss/total": loss_total, "optim/grad_norm": float(grad_norm)})
    batch.extras["policy_logp_BT"] = policy_logp_BT * batch.mask_BT.cpu()
    if not rescored:  # the behaviour statistics, for the step's metrics and the rollout dump
        batch.old_logp_BT = batch.extras["policy_logp_BT"].to(device)
        batch.entropy_BT = (entropy_BT * batch.mask_BT.cpu()).to(device)
    out = means.result()
    out["optim/steps"] = float(n_opt_steps)
    return out
