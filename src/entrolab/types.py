"""The data that flows between stages, as dataclasses of tensors with shape-suffixed names.

Shape suffixes: ``_B`` sequences (prompts × group), ``_P`` prompts, ``_G`` group members,
``_T`` completion tokens, ``_L`` full (prompt + completion) positions, ``_V`` vocabulary,
``_D`` hidden size. Masks are named ``mask_*`` and True means valid.

Stage contracts (every registered component follows one of these; see docs/components.md):

* task        ``Task`` protocol below.
* reward      ``reward(batch, task) -> (rewards_B, metrics)``.
* shaper      ``shaper(rewards_B, batch, task) -> (rewards_B, metrics)``.
* advantage   ``estimator(batch) -> (adv_B or adv_BT, metrics)``.
* surrogate   ``surrogate(inp: PolicyInputs) -> (loss_BT, metrics)``.
* token weight ``weight(inp: PolicyInputs) -> (weight_BT, metrics)``; detached, multiplies loss_BT.
* regularizer ``reg(inp: PolicyInputs) -> (loss_BT, metrics)``; added to loss_BT before aggregation.
* aggregation ``agg(loss_BT, mask_BT, *, num_tokens, num_seqs) -> scalar`` where the counts are
  over the whole mini-batch, so summing micro-batch results gives the exact mini-batch loss.

Optional hooks any component may define (the trainer calls them without knowing the method):
``requires`` (a set drawn from ``REQUIREMENTS``), ``on_step_end(metrics)``, ``state_dict()`` and
``load_state_dict(state)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

#: Extra per-token quantities a component may ask the trainer to compute.
#: ``ref_logp``: log-probs under the frozen reference model; ``hidden``: last-layer hidden
#: states of completion tokens (``hidden_BTD``); ``logits``: temperature-scaled completion
#: logits (``logits_BTV``, memory-heavy, only for methods that need the full distribution).
REQUIREMENTS = frozenset({"ref_logp", "hidden", "logits"})


@dataclass(frozen=True)
class Prompt:
    """One task prompt. ``id`` is stable across runs (used to match base vs trained samples)."""

    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement of one completion.

    ``answer`` is the canonical form of the parsed answer (None if nothing parsed), so that two
    completions with the same answer compare equal; ``reason`` is a short code such as ``ok``,
    ``wrong_value``, ``no_answer``, ``parse_error``, ``reused_number``, ``div_by_zero``.
    """

    reward: float
    correct: bool
    answer: str | None
    reason: str


@runtime_checkable
class Task(Protocol):
    """A verifiable task: prompts, a verifier and (optionally) the full solution set."""

    name: str
    #: Marker between the scratchpad (thinking) and the answer section, or None.
    answer_marker: str | None

    def prompts(self, split: str) -> list[Prompt]:
        """Prompts of ``split`` (``train``/``validation``/``test``), deterministic given the task seed."""

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        """Judge ``completion`` (untrusted text) for ``prompt``; never raises on bad text."""

    def solutions(self, prompt: Prompt) -> list[str] | None:
        """Canonical forms of every correct answer, or None when not enumerable."""

    def demonstration(self, prompt: Prompt, rng: Any) -> str | None:
        """A completion to imitate in SFT (``rng`` is a ``random.Random``), or None."""

    def charset(self) -> str | None:
        """Every character prompts and completions may use (for char-level tokenizers), or None."""


@dataclass
class RolloutBatch:
    """Everything known about one rollout batch of P prompts × G completions (B = P·G).

    Filled in stages: the sampler sets the token fields, the scorer the per-token statistics,
    the reward stage ``rewards_B``, the advantage stage ``adv_BT``.
    """

    prompts: list[Prompt]                     # P prompts; group g belongs to prompts[g]
    group_id_B: torch.Tensor                  # [B] long, index into ``prompts``
    prompt_ids_BL: torch.Tensor               # [B, Lp] left-padded prompt tokens
    mask_prompt_BL: torch.Tensor              # [B, Lp] True = real prompt token
    completion_ids_BT: torch.Tensor           # [B, T] right-padded completion tokens
    mask_BT: torch.Tensor                     # [B, T] True = generated token (incl. EOS)
    texts: list[str]                          # B decoded completions (without EOS)
    stop_reasons: list[str]                   # B: "eos" or "length"
    temperature: float = 1.0                  # sampling temperature (log-probs use logits / T)
    old_logp_BT: torch.Tensor | None = None   # behaviour log-probs (no grad)
    entropy_BT: torch.Tensor | None = None    # behaviour full-vocabulary entropy (no grad)
    ref_logp_BT: torch.Tensor | None = None   # reference log-probs, if requested
    hidden_BTD: torch.Tensor | None = None    # last-layer hidden states, if requested
    verdicts: list[Verdict] | None = None     # task verifier result per completion
    rewards_B: torch.Tensor | None = None     # final scalar reward per completion
    reward_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # name → [B] before weighting
    adv_BT: torch.Tensor | None = None
    step: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.completion_ids_BT.shape[0])

    @property
    def group_size(self) -> int:
        return self.batch_size // max(1, len(self.prompts))

    @property
    def lengths_B(self) -> torch.Tensor:
        return self.mask_BT.sum(-1)

    @property
    def correct_B(self) -> torch.Tensor:
        if self.verdicts is None:
            raise ValueError("batch has no verdicts yet")
        return torch.tensor([v.correct for v in self.verdicts], dtype=torch.bool)

    def select(self, idx_B: torch.Tensor) -> "RolloutBatch":
        """Rows ``idx_B`` of every per-sequence tensor (prompts list is kept whole)."""
        idx = idx_B.tolist()

        def pick(t):
            return None if t is None else t[idx_B]

        return RolloutBatch(
            prompts=self.prompts,
            group_id_B=self.group_id_B[idx_B],
            prompt_ids_BL=self.prompt_ids_BL[idx_B],
            mask_prompt_BL=self.mask_prompt_BL[idx_B],
            completion_ids_BT=self.completion_ids_BT[idx_B],
            mask_BT=self.mask_BT[idx_B],
            texts=[self.texts[i] for i in idx],
            stop_reasons=[self.stop_reasons[i] for i in idx],
            temperature=self.temperature,
            old_logp_BT=pick(self.old_logp_BT),
            entropy_BT=pick(self.entropy_BT),
            ref_logp_BT=pick(self.ref_logp_BT),
            hidden_BTD=pick(self.hidden_BTD),
            verdicts=None if self.verdicts is None else [self.verdicts[i] for i in idx],
            rewards_B=pick(self.rewards_B),
            reward_terms={k: v[idx_B] for k, v in self.reward_terms.items()},
            adv_BT=pick(self.adv_BT),
            step=self.step,
            extras=dict(self.extras),
        )


@dataclass
class PolicyInputs:
    """What surrogates, token weights and regularizers see for one micro-batch.

    ``logp_BT``, ``entropy_BT`` and (when requested) ``logits_BTV`` carry gradient; everything
    else is detached. Statistics a
    component computes over "the batch" are over this micro-batch unless its docstring says
    otherwise (the trainer's default micro-batch is the whole mini-batch).
    """

    logp_BT: torch.Tensor
    old_logp_BT: torch.Tensor
    adv_BT: torch.Tensor
    mask_BT: torch.Tensor
    entropy_BT: torch.Tensor
    rewards_B: torch.Tensor
    group_id_B: torch.Tensor
    ref_logp_BT: torch.Tensor | None = None
    logits_BTV: torch.Tensor | None = None
    hidden_BTD: torch.Tensor | None = None
    step: int = 0
    generator: torch.Generator | None = None
    extras: dict[str, Any] = field(default_factory=dict)


Metrics = dict[str, float]
