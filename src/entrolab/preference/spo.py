"""SPO: Self-supervised Preference Optimization (Li et al. 2024, arXiv:2409.17791), reconstructed.

SPO adds a self-supervised *preference degree* task to any alignment loss:
L = L_align + λ·L_degree. Degraded copies y⁽ᵏ⁾ of a response are built by removing k of its key
content units (k = 0..K; more removed = lower degree), and the model learns to tell k from
(x, y⁽ᵏ⁾) with cross-entropy, so that its representation tracks *how much* of a good answer is
there, not only which of two answers is better.

Only the abstract was available: the unit extraction (the paper uses an LLM to pick key content),
the classifier's form and λ, K are our choices (docs/methods/spo.md lists them). Here:

* units are the separator-split pieces of the response's scratchpad (the text before ``marker``);
  on Countdown the steps ``3+5=8``, ``7*8=56`` of ``3+5=8,7*8=56#7*(3+5)``; the answer is kept;
* a removed unit is overwritten by ``filler`` of the same number of characters, so the length
  stays the same and the classifier cannot count characters instead of reading content;
* the classifier is one linear layer on the policy's last hidden state, averaged over the response
  tokens, trained with the policy (``extra_parameters``); it never touches generation.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F

from entrolab.preference.api import PairLogps
from entrolab.registry import PREFERENCE_LOSSES


def degree_variants(text: str, *, k_max: int = 2, unit_sep: str = ",", marker: str | None = "#",
                    filler: str = " ", rng: random.Random | None = None) -> list[str]:
    """y⁽⁰⁾ … y⁽ⁿ⁾ of one response, n = min(k_max, number of non-blank units), y⁽⁰⁾ = ``text``.

    y⁽ᵏ⁾ has k units replaced by ``filler`` repeated to the unit's length (same length as
    ``text``). Which units go: the first k of a random order drawn from ``rng``, or the last k
    units when ``rng`` is None; the removed sets are nested (y⁽ᵏ⁺¹⁾ removes one more than y⁽ᵏ⁾).
    Units are the ``unit_sep``-split pieces of the text before the first ``marker`` (the whole
    text when the marker is absent or None).
    """
    if len(filler) != 1:
        raise ValueError(f"spo: filler must be one character (it keeps lengths equal), got {filler!r}")
    head, mark, tail = text.partition(marker) if marker else (text, "", "")
    units = head.split(unit_sep)
    content = [i for i, u in enumerate(units) if u.strip()]
    order = rng.sample(content, len(content)) if rng is not None else content[::-1]
    out = [text]
    for k in range(1, min(k_max, len(content)) + 1):
        cut = set(order[:k])
        kept = [filler * len(u) if i in cut else u for i, u in enumerate(units)]
        out.append(unit_sep.join(kept) + mark + tail)
    return out


def degree_loss(logits_NC: torch.Tensor, degree_N: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the degree classifier (mean over the N variants) and its accuracy."""
    loss = F.cross_entropy(logits_NC.float(), degree_N)
    acc = (logits_NC.detach().argmax(-1) == degree_N).float().mean()
    return loss, {"spo/degree_loss": float(loss.detach()), "spo/degree_acc": float(acc)}


def response_mean_hidden(model, tokenizer, prompts: list[str], responses: list[str], device) -> torch.Tensor:
    """[N, D] the last hidden state averaged over each response's tokens (and its EOS), in fp32.

    Prompt and response are encoded as the SFT and RL code encode them (``sft.encode_pair``),
    right-padded, with gradient into the model.
    """
    from entrolab.sft import collate, encode_pair

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids_NL, mask_NL, mask_resp_NL = (t.to(device) for t in collate(
        [encode_pair(tokenizer, p, r) for p, r in zip(prompts, responses)], pad))
    out = model(input_ids=ids_NL, attention_mask=mask_NL.long(), output_hidden_states=True, use_cache=False)
    hidden_NLD = out.hidden_states[-1].float()
    m_NL1 = mask_resp_NL.unsqueeze(-1).float()
    return (hidden_NLD * m_NL1).sum(1) / m_NL1.sum(1)


@PREFERENCE_LOSSES.register("spo", paper="Self-supervised Preference Optimization: Enhance Your Language Model "
                            "with Preference Degree Awareness", arxiv="2409.17791")
class SPO:
    """SPO: a base preference loss (default DPO) + λ·cross-entropy of a preference-degree classifier."""

    def __init__(self, *, base: dict[str, Any] | None = None, weight: float = 0.1, k_max: int = 2,
                 unit_sep: str = ",", marker: str | None = "#", filler: str = " ", seed: int = 0) -> None:
        base = dict(base) if base is not None else {"name": "dpo"}
        name = base.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"spo: base must be a block with a 'name' (a preference loss), got {name!r}")
        if name == "spo":
            raise ValueError("spo: base cannot be 'spo' itself")
        if not weight >= 0:
            raise ValueError(f"spo: weight must be >= 0, got {weight}")
        if not 1 <= k_max <= 16:
            raise ValueError(f"spo: k_max must be in [1, 16] (units removed at most), got {k_max}")
        if not unit_sep:
            raise ValueError("spo: unit_sep must be a non-empty string")
        if len(filler) != 1:
            raise ValueError(f"spo: filler must be one character (it keeps lengths equal), got {filler!r}")
        self.base = PREFERENCE_LOSSES.build(name, base, where="loss.base")
        self.requires_reference = bool(getattr(self.base, "requires_reference", True))
        self.weight, self.k_max, self.unit_sep, self.marker, self.filler = weight, k_max, unit_sep, marker, filler
        self.seed = seed
        self.rng = random.Random(seed)
        self.head: torch.nn.Linear | None = None
        self._pending_head: dict[str, torch.Tensor] | None = None

    def __call__(self, lp: PairLogps) -> tuple[torch.Tensor, dict[str, float]]:
        return self.base(lp)

    # ---------------------------------------------------------------- the degree classifier
    def bind_policy(self, model, tokenizer) -> None:
        """Create the head (input size = the policy's hidden size) on the policy's device; called by
        the trainer once the model is loaded, before ``extra_parameters``."""
        hidden = model.get_input_embeddings().embedding_dim
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(self.seed)  # the head's init is owned by the recipe's seed
        head = torch.nn.Linear(hidden, self.k_max + 1)
        with torch.no_grad():
            bound = hidden ** -0.5
            head.weight.copy_(torch.empty_like(head.weight).uniform_(-bound, bound, generator=gen))
            head.bias.zero_()
        self.head = head.to(device)
        if self._pending_head is not None:
            self._load_head(self._pending_head)
            self._pending_head = None

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        if self.head is None:
            raise RuntimeError("spo: call bind_policy(model, tokenizer) before extra_parameters(): the degree "
                               "classifier's input size is the policy's hidden size")
        return list(self.head.parameters())

    def extra_loss(self, *, model, tokenizer, pairs, device) -> tuple[torch.Tensor, dict[str, float]]:
        """λ·CE of the degree classifier over the degree variants of every chosen and rejected
        response of the batch (responses without a content unit contribute nothing)."""
        if self.head is None:
            raise RuntimeError("spo: call bind_policy(model, tokenizer) before extra_loss()")
        prompts, texts, degrees = [], [], []
        for pair in pairs:
            for response in (pair.chosen, pair.rejected):
                variants = degree_variants(response, k_max=self.k_max, unit_sep=self.unit_sep, marker=self.marker,
                                           filler=self.filler, rng=self.rng)
                if len(variants) < 2:
                    continue
                prompts += [pair.prompt] * len(variants)
                texts += variants
                degrees += range(len(variants))
        if not texts:
            zero = sum(p.sum() for p in self.head.parameters()) * 0.0
            return zero, {"spo/degree_examples": 0.0}
        pooled_ND = response_mean_hidden(model, tokenizer, prompts, texts, device)
        loss, metrics = degree_loss(self.head(pooled_ND), torch.tensor(degrees, device=pooled_ND.device))
        metrics["spo/degree_examples"] = float(len(texts))
        return self.weight * loss, metrics

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": self.rng.getstate()}
        head = self.head.state_dict() if self.head is not None else self._pending_head
        if head is not None:
            state["head"] = {k: v.detach().cpu().clone() for k, v in head.items()}
        if callable(getattr(self.base, "state_dict", None)):
            state["base"] = self.base.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the RNG, the base loss's state and the head (kept until ``bind_policy`` if unbound)."""
        if "rng" in state:
            self.rng.setstate(_as_rng_state(state["rng"]))
        if "base" in state and callable(getattr(self.base, "load_state_dict", None)):
            self.base.load_state_dict(state["base"])
        if "head" in state:
            if self.head is None:
                self._pending_head = state["head"]
            else:
                self._load_head(state["head"])

    def _load_head(self, head: dict[str, torch.Tensor]) -> None:
        assert self.head is not None
        want = {k: tuple(v.shape) for k, v in self.head.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in head.items()}
        if want != got:
            raise ValueError(f"spo: checkpointed degree head has shapes {got}, this policy needs {want} "
                             f"(k_max or the model's hidden size changed)")
        self.head.load_state_dict(head)


def _as_rng_state(state: Any) -> tuple:
    """random.Random state after a torch.save/load round trip (lists may come back for tuples)."""
    version, internal, gauss = state
    return (int(version), tuple(int(x) for x in internal), gauss)
