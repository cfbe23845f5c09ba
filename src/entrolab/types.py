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
* regularizer ``reg(inp: PolicyInputs) -> (loss_BT | 0-dim loss, metrics)``; a loss_BT is added to the
  surrogate's loss_BT before aggregation, a 0-dim loss once after it (weighted by the micro-batch's
  sequence share, ``policy_update.scalar_share``, so a mini-batch sees it exactly once).
* aggregation ``agg(loss_BT, mask_BT, *, num_tokens, num_seqs) -> scalar`` where the counts are
  over the whole mini-batch, so summing micro-batch results gives the exact mini-batch loss.

Optional hooks any component may define (the trainer calls them without knowing the method):
``requires`` (a set drawn from ``REQUIREMENTS``), ``on_step_end(metrics)``, ``state_dict()`` and
``load_state_dict(state)``, and two hooks for sampling-side methods (AEPO, DCPO):

* **Extra sampling passes**: ``side_rollouts(batch, *, step) -> list[SideRequest]`` and
  ``merge_side(batch, sides) -> (update_batch, metrics)``. After the main batch has rewards and
  advantages, the trainer samples each request with the same sampler, then scores it at the *main*
  batch's temperature (so ``old_logp_BT`` and the update's ratios refer to the policy being trained;
  the sampler's own log-probs stay in ``extras["sampling_logp_BT"]``), verifies it and runs the
  reward stage (terms and shapers) on it, and hands the side batches to ``merge_side``, which
  returns the batch the policy update trains on (advantages set on every row). Every sampled batch
  carries ``extras["sampling_temperature_B"]``; rows of side passes have ``extras["side_pass_B"]``
  True (the rollout dump writes main rows only).
* **Extra scoring temperatures**: ``scoring_temperatures(*, step) -> tuple[float, ...]``. Before
  rewards and advantages the trainer stores, for each τ asked for, the log-probs of the sampled
  tokens under logits / τ (no grad) in ``extras[logp_at_temperature_key(τ)]`` (``"logp_at_T1.2_BT"``).
* **Policy access**: ``set_scorer(scorer)`` receives a no-grad scorer of continuations under the
  current policy; ``bind_policy(model, tokenizer)`` receives the live policy itself.
* **Batch-scope statistics**: ``prepare_batch(batch) -> (extras, metrics)`` is called once per step
  on the whole update batch (after advantages and side passes, just before the policy update;
  ``Components.prepare_batch``). Each returned extra must be per-row data (see below) and is
  stored in ``batch.extras``, so every micro-batch gets its rows in ``PolicyInputs.extras``: use it
  for statistics whose scope is the rollout batch (perplexity_position's group min-max, clip_b's
  μ_S/σ_S), which must not depend on ``mini_batch_size``/``micro_batch_size``. Writing a key that
  already exists is an error. The statistics see the batch before the update (behaviour
  ``old_logp_BT``/``entropy_BT``; a hook that reads them declares ``requires ⊇ {"old_stats"}``,
  see ``REQUIREMENTS``), not the policy as it moves during the update. Before the hooks
  run, a ``extras["reinforce_mask_BT"]`` (``REINFORCE_MASK_KEY``; bool, True = reinforce) left by
  any stage zeroes ``adv_BT`` on its False tokens (the likelihood reward reinforces the CoT only).
* **Aggregation binding**: ``bind_aggregation(aggregation)`` is called once by ``build_components``
  with the recipe's policy-loss aggregation, for a component whose own loss term must be weighted
  per row like the policy loss (the likelihood reward's SFT term, Lemma 1 1:1).
* **Auxiliary loss**: ``auxiliary_loss(batch, idx_M) -> (loss or None, metrics)`` is called once per
  mini-batch (rows ``idx_M``) and its loss is back-propagated into the same optimizer step (e.g. the
  likelihood reward's explicit SFT-like term, Lemma 1 of arXiv 2602.03979).

Per-row extras: an ``extras`` entry whose name ends in ``_B``, ``_BT`` or ``_BTD`` and whose value
is a tensor with one row per sequence (``kl_weight_B``, ``policy_logp_BT``) is row data:
``RolloutBatch.select`` / ``RolloutBatch.concat`` carry it with the rows, and the policy update
passes the micro-batch's rows to every component in ``PolicyInputs.extras``. After the update the
trainer's batch holds ``extras["policy_logp_BT"]``: log-probs of the last update pass (CPU, detached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

#: Extra per-token quantities a component may ask the trainer to compute.
#: ``ref_logp``: log-probs under the frozen reference model; ``hidden``: last-layer hidden
#: states of completion tokens (``hidden_BTD``); ``logits``: temperature-scaled completion
#: logits (``logits_BTV``, memory-heavy, only for methods that need the full distribution);
#: ``old_stats``: the behaviour log-probs/entropies ``batch.old_logp_BT``/``batch.entropy_BT`` before
#: the policy update (read by a reward, shaper, advantage estimator or ``prepare_batch`` hook). A
#: component that reads them outside the update forward must declare it: without it the trainer may
#: skip the no-grad re-scoring forward and fill both from the update's own forward afterwards
#: (``Trainer.rescoring_needed``). ``hidden`` also means pre-update hidden states (``batch.hidden_BTD``).
REQUIREMENTS = frozenset({"ref_logp", "hidden", "logits", "old_stats"})

#: Name suffixes of per-row ``extras`` (see the module docstring); the T-bearing ones pad on dim 1.
ROW_SUFFIXES = ("B", "BT", "BTD")


#: Per-row extra a component (e.g. the likelihood reward) may set: bool [B, T], True on the tokens
#: whose policy-gradient term is kept. ``Components.prepare_batch`` multiplies ``adv_BT`` by it
#: before the update (the tokens stay in the aggregation's counts and in the regularizers).
REINFORCE_MASK_KEY = "reinforce_mask_BT"


def is_row_extra(name: str, value: Any, batch_size: int) -> bool:
    """True when ``extras[name]`` is per-row data: a shape-suffixed name and a [B, ...] tensor."""
    return (isinstance(value, torch.Tensor) and "_" in name and name.rsplit("_", 1)[1] in ROW_SUFFIXES
            and value.dim() >= 1 and value.shape[0] == batch_size)


def logp_at_temperature_key(temperature: float) -> str:
    """The ``extras`` key of log-probs scored at ``temperature`` (``1.2 -> "logp_at_T1.2_BT"``)."""
    return f"logp_at_T{float(temperature):g}_BT"


@dataclass(frozen=True)
class SideRequest:
    """One extra sampling pass a component asks for (``side_rollouts`` hook, e.g. AEPO).

    ``prompt_idx`` indexes ``batch.prompts`` of the main batch (None = every prompt);
    ``group_size`` None means the recipe's ``rollout.group_size``. Top-p and the length cap are
    the recipe's.
    """

    temperature: float
    prompt_idx: tuple[int, ...] | None = None
    group_size: int | None = None

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"SideRequest.temperature must be > 0, got {self.temperature}")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"SideRequest.group_size must be >= 1 or None, got {self.group_size}")
        if self.prompt_idx is not None and not self.prompt_idx:
            raise ValueError("SideRequest.prompt_idx is empty; give None for every prompt")


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
    mask_BT: torch.Tensor                     # [B, T] True = generated token (incl. EOS); the loss mask
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
    # [B, T] True = real completion-region token the model attends to: generated *or* written by an
    # environment between turns (multi-turn episodes, ``agents.episodes``). None = ``mask_BT`` (single turn).
    attn_BT: torch.Tensor | None = None

    @property
    def attention_BT(self) -> torch.Tensor:
        """The completion-region attention mask: ``attn_BT``, or ``mask_BT`` when there are no env tokens."""
        return self.mask_BT if self.attn_BT is None else self.attn_BT

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
        """Rows ``idx_B`` of every per-sequence tensor and per-row extra (prompts list is kept whole)."""
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
            extras={k: v[idx_B.to(v.device)] if is_row_extra(k, v, self.batch_size) else v
                    for k, v in self.extras.items()},
            attn_BT=pick(self.attn_BT),
        )

    @classmethod
    def concat(cls, parts: list["RolloutBatch"]) -> "RolloutBatch":
        """Rows of ``parts`` one after another, as one batch (e.g. side-pass rows + main rows).

        Prompt lists are concatenated and group ids offset, so groups stay distinct; prompts are
        re-left-padded and completions (and ``_BT``/``_BTD`` tensors) re-right-padded with zeros
        (mask False). All parts must be scored at one temperature. An optional field must be set in
        every part or in none. Per-row extras present in every part are concatenated, dropped
        otherwise; other extras are kept when every part holds the same value.
        """
        if not parts:
            raise ValueError("RolloutBatch.concat needs at least one batch")
        temps = sorted({p.temperature for p in parts})
        if len(temps) > 1:
            raise ValueError(f"RolloutBatch.concat: parts are scored at temperatures {temps}; log-probs "
                             "of one batch must share one temperature (rescore first)")
        width = {"BL": max(p.prompt_ids_BL.shape[1] for p in parts),
                 "BT": max(p.completion_ids_BT.shape[1] for p in parts)}

        def cat(name: str, values: list, pad: str | None = None) -> torch.Tensor | None:
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise ValueError(f"RolloutBatch.concat: '{name}' is set in some parts but not in others")
            if pad is not None:
                values = [_pad_dim1(v, width[pad], left=pad == "BL") for v in values]
            return torch.cat([v.to(values[0].device) for v in values])

        def col(name: str, pad: str | None = None) -> torch.Tensor | None:
            return cat(name, [getattr(p, name) for p in parts], pad)

        offsets = [0]
        for p in parts[:-1]:
            offsets.append(offsets[-1] + len(p.prompts))
        verdicts = [p.verdicts for p in parts]
        if any(v is None for v in verdicts) and not all(v is None for v in verdicts):
            raise ValueError("RolloutBatch.concat: 'verdicts' is set in some parts but not in others")
        first = parts[0].extras
        extras: dict[str, Any] = {}
        for k, v in first.items():
            if all(is_row_extra(k, p.extras.get(k), p.batch_size) for p in parts):
                extras[k] = cat(k, [p.extras[k] for p in parts], "BT" if k.rsplit("_", 1)[1] != "B" else None)
            elif not is_row_extra(k, v, parts[0].batch_size) and all(k in p.extras and _same(v, p.extras[k])
                                                                      for p in parts):
                extras[k] = v
        return cls(
            prompts=[q for p in parts for q in p.prompts],
            group_id_B=torch.cat([p.group_id_B + off for p, off in zip(parts, offsets)]),
            prompt_ids_BL=col("prompt_ids_BL", "BL"),
            mask_prompt_BL=col("mask_prompt_BL", "BL"),
            completion_ids_BT=col("completion_ids_BT", "BT"),
            mask_BT=col("mask_BT", "BT"),
            texts=[t for p in parts for t in p.texts],
            stop_reasons=[r for p in parts for r in p.stop_reasons],
            temperature=temps[0],
            old_logp_BT=col("old_logp_BT", "BT"),
            entropy_BT=col("entropy_BT", "BT"),
            ref_logp_BT=col("ref_logp_BT", "BT"),
            hidden_BTD=col("hidden_BTD", "BT"),
            verdicts=None if verdicts[0] is None else [v for vs in verdicts for v in vs],
            rewards_B=col("rewards_B"),
            reward_terms={k: cat(k, [p.reward_terms[k] for p in parts]) for k in parts[0].reward_terms
                          if all(k in p.reward_terms for p in parts)},
            adv_BT=col("adv_BT", "BT"),
            step=parts[0].step,
            extras=extras,
            # single-turn parts attend to exactly their generated tokens, so mask_BT stands in for them
            attn_BT=None if all(p.attn_BT is None for p in parts) else cat(
                "attn_BT", [p.attention_BT for p in parts], "BT"),
        )


def _pad_dim1(t: torch.Tensor, width: int, *, left: bool = False) -> torch.Tensor:
    """Zero-pad dim 1 of ``t`` to ``width`` (on the left for left-padded prompts)."""
    if t.shape[1] == width:
        return t
    zeros = t.new_zeros((t.shape[0], width - t.shape[1], *t.shape[2:]))
    return torch.cat([zeros, t] if left else [t, zeros], dim=1)


def _same(a: Any, b: Any) -> bool:
    """Whether two non-row extras hold the same value (tensors compared elementwise)."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and bool(torch.equal(a.cpu(), b.cpu())))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values without a usable ==
        return False


@dataclass
class PolicyInputs:
    """What surrogates, token weights and regularizers see for one micro-batch.

    ``logp_BT``, ``entropy_BT`` and (when requested) ``logits_BTV`` carry gradient; everything
    else is detached. Statistics a
    component computes over "the batch" from these tensors are over this micro-batch (the trainer's
    default micro-batch is the whole mini-batch); whole-batch statistics come through ``extras``
    from the ``prepare_batch`` hook (module docstring). ``extras`` holds the
    micro-batch's rows of every per-row batch extra (e.g. ``kl_weight_B``; module docstring).
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
