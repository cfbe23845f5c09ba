"""The contract between the preference trainer and the preference losses.

The trainer scores every pair with the policy (and, when the loss needs it, the reference) and
hands the loss one :class:`PairLogps`. Sequence log-probs are **sums** over response tokens
(prompt and padding masked out), as the DPO-family derivations assume; losses that want
length-normalised scores divide by ``len_*_B`` themselves.

A loss component is a registered class (``PREFERENCE_LOSSES``) whose keyword-only constructor
arguments are its hyperparameters, and which is called as ``loss(lp) -> (loss_B, metrics)``:
``loss_B`` [B] is minimised (the trainer averages it over the batch) and ``metrics`` are floats
(detached). Optional members, duck-typed by the trainer:

* ``requires_reference: bool`` (default True): False for reference-free losses (CPL, POWER); the
  trainer then skips the reference forward and passes ``ref_*_B = None``.
* ``state_dict()`` / ``load_state_dict(state)``: per-example state (POWER-DL's dynamic labels,
  keyed by ``index_B``) that checkpoints save and ``--resume`` restores.
* ``extra_loss(*, model, tokenizer, pairs, device) -> (loss, metrics)``: a 0-dim auxiliary loss
  added to the batch mean (SPO's preference-degree loss), computed with the policy model.
* ``extra_parameters() -> list[torch.nn.Parameter]``: trained together with the policy (a head
  that ``extra_loss`` uses); saved in checkpoints through ``state_dict``.
* ``bind_policy(model, tokenizer)``: called once after the policy is loaded and before
  ``extra_parameters()`` / ``load_state_dict`` (as the RL trainer's hook of the same name), for a
  loss whose extra parameters are sized by the model (SPO's head takes the hidden size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PairLogps:
    """Per-pair sequence statistics of one batch of B preference pairs.

    Attributes:
        chosen_B: [B] Σ_t log π_θ(y_w,t | x, y_w,<t) over the chosen response (carries gradient).
        rejected_B: [B] the same for the rejected response.
        ref_chosen_B: [B] Σ_t log π_ref(...) of the chosen response (no gradient), or None.
        ref_rejected_B: [B] the same for the rejected response, or None.
        len_chosen_B: [B] float, number of response tokens of the chosen response (≥ 1).
        len_rejected_B: [B] float, number of response tokens of the rejected response (≥ 1).
        label_B: [B] float in [0, 1], P(chosen ≻ rejected) from the data (1 = hard label).
        index_B: [B] long, the pair's row index in the dataset (keys per-example state).
        group_B: [B] long, an id shared by the pairs of the same prompt (ranked losses compare
            within a prompt), or None when the trainer does not know it.
    """

    chosen_B: torch.Tensor
    rejected_B: torch.Tensor
    ref_chosen_B: torch.Tensor | None
    ref_rejected_B: torch.Tensor | None
    len_chosen_B: torch.Tensor
    len_rejected_B: torch.Tensor
    label_B: torch.Tensor
    index_B: torch.Tensor
    group_B: torch.Tensor | None = None

    def log_ratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """h(y_w), h(y_l): policy minus reference sequence log-probs (reference 0 when absent)."""
        ref_w = self.ref_chosen_B if self.ref_chosen_B is not None else torch.zeros_like(self.chosen_B)
        ref_l = self.ref_rejected_B if self.ref_rejected_B is not None else torch.zeros_like(self.rejected_B)
        return self.chosen_B - ref_w, self.rejected_B - ref_l
