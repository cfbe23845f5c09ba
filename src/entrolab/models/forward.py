"""Per-token statistics of completions under a causal LM: log-probs, entropies, hidden states.

One function serves the no-grad scoring pass (behaviour/reference log-probs) and the training
forward (with grad). Sequences are ``[left-padded prompt | right-padded completion]``; position ids
are computed from the attention mask so left padding does not shift positions (the sampler uses the
same convention, so on-policy ratios are exactly 1).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import torch

from entrolab.models.chunked_logprob import chunked_logp_entropy

# Config keys of HF models whose logits are not ``lm_head(last_hidden_state)``: Gemma 2/3's final
# soft-capping (tanh(z/c)·c), Cohere's ``logit_scale``, Granite's ``logits_scaling`` (a divisor).
_LOGIT_TRANSFORM_KEYS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
_HEAD_CHECK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> reason (None = supported)


@dataclass
class ForwardOut:
    logp_BT: torch.Tensor               # log π(o_t | s_t) of the completion tokens (temperature-scaled)
    entropy_BT: torch.Tensor | None     # full-vocabulary entropy H(π(·|s_t))
    hidden_BTD: torch.Tensor | None     # last-layer hidden state at each completion token
    logits_BTV: torch.Tensor | None     # temperature-scaled logits predicting each completion token


def token_logp_entropy(logits_BTV: torch.Tensor, ids_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of ``ids_BT`` and entropy of the softmax of ``logits_BTV`` (computed in float32)."""
    logp_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    logp_BT = logp_BTV.gather(-1, ids_BT.unsqueeze(-1)).squeeze(-1)
    entropy_BT = -(logp_BTV.exp() * logp_BTV).sum(-1)
    return logp_BT, entropy_BT


def _decoder_and_head(model: torch.nn.Module):
    """``(decoder, lm_head)`` of an HF causal LM, or raise ValueError saying why the chunked path cannot
    reproduce its logits."""
    cfg = getattr(model, "config", None)
    for key in _LOGIT_TRANSFORM_KEYS:
        val = getattr(cfg, key, None)
        if val is not None and not (key == "logits_scaling" and val == 1):
            raise ValueError(f"config.{key}={val} transforms the logits after the LM head")
    get_dec, get_head = getattr(model, "get_decoder", None), getattr(model, "get_output_embeddings", None)
    if not (callable(get_dec) and callable(get_head)):
        raise ValueError(f"{type(model).__name__} has no get_decoder()/get_output_embeddings()")
    decoder, head = get_dec(), get_head()
    if decoder is None or decoder is model or not isinstance(head, torch.nn.Linear):
        raise ValueError(f"{type(model).__name__}: LM head is {type(head).__name__}, not a torch.nn.Linear "
                         "applied to the decoder's output")
    return decoder, head


def chunked_support(model: torch.nn.Module) -> str | None:
    """None if ``completion_stats`` can use the chunked path on ``model``, else the reason it cannot.

    Checked once per model: the config keys above, then a probe that compares the model's own logits
    with ``lm_head(decoder(ids).last_hidden_state)`` on four tokens (eval mode, no autocast, no RNG
    used, each module's train/eval flag restored), which catches any other post-head transform.
    """
    if model in _HEAD_CHECK:
        return _HEAD_CHECK[model]
    reason = None
    try:
        decoder, head = _decoder_and_head(model)
        modes = {m: m.training for m in model.modules()}
        device = head.weight.device
        ids_1L = torch.arange(min(4, head.weight.shape[0]), device=device)[None]
        try:
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                full = model(input_ids=ids_1L, use_cache=False).logits.float()
                mine = head(decoder(input_ids=ids_1L, use_cache=False).last_hidden_state).float()
        finally:
            for m, flag in modes.items():
                m.training = flag
        err = float((full - mine).abs().max())
        if not err <= 1e-4 * (1.0 + float(full.abs().max())):
            reason = f"the model's logits differ from lm_head(last hidden state) by {err:.3g}"
    except ValueError as e:
        reason = str(e)
    except (TypeError, AttributeError, RuntimeError) as e:  # a decoder with another call convention
        reason = f"calling its decoder as a Llama-style body failed ({type(e).__name__}: {e})"
    _HEAD_CHECK[model] = reason
    if reason is not None:
        warnings.warn(f"chunked log-probs unavailable for {type(model).__name__} ({reason}); "
                      "using the naive full-logits path", stacklevel=3)
    return reason


def completion_stats(
    model: torch.nn.Module,
    prompt_ids_BL: torch.Tensor,
    mask_prompt_BL: torch.Tensor,
    completion_ids_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    temperature: float = 1.0,
    need_entropy: bool = True,
    need_hidden: bool = False,
    need_logits: bool = False,
    chunk_size: int = 0,
    attn_BT: torch.Tensor | None = None,
) -> ForwardOut:
    """Forward ``[prompt | completion]`` and return per-completion-token statistics.

    Logits are divided by the sampling ``temperature`` before the softmax, as verl, TRL and EasyR1
    do, so that log-probs and entropies describe the distribution the tokens were sampled from.
    Padded completion positions hold arbitrary (finite) values; callers mask them.

    ``chunk_size > 0`` selects the memory-lean path when the caller does not need the logits and the
    model supports it (``chunked_support``): the decoder body gives the last hidden states, and
    ``chunked_logp_entropy`` computes log-probs and entropies of the valid tokens ``chunk_size`` at a
    time from them and the LM-head weight, never holding ``[B, T, V]``; its pads hold 0. It equals
    the naive path up to float rounding (tested to 1e-5). ``chunk_size = 0`` is the naive path.

    ``attn_BT`` (multi-turn episodes): the completion tokens attended to, a superset of ``mask_BT``
    that adds the environment's tokens between turns; None means ``mask_BT``. Statistics are still
    only meaningful where ``mask_BT`` is True.
    """
    device = next(model.parameters()).device
    ids_BL = torch.cat([prompt_ids_BL, completion_ids_BT], dim=1).to(device)
    attn_BL = torch.cat([mask_prompt_BL, mask_BT if attn_BT is None else attn_BT], dim=1).to(device)
    pos_BL = (attn_BL.long().cumsum(-1) - 1).clamp(min=0)
    T = completion_ids_BT.shape[1]
    if T == 0:
        empty = torch.zeros(ids_BL.shape[0], 0, device=device)
        return ForwardOut(empty, empty if need_entropy else None, None, None)
    if chunk_size > 0 and not need_logits and chunked_support(model) is None:
        decoder, head = _decoder_and_head(model)
        dec = decoder(input_ids=ids_BL, attention_mask=attn_BL.long(), position_ids=pos_BL, use_cache=False,
                      output_hidden_states=need_hidden)
        mask_dev_BT = mask_BT.to(device).bool()
        h_BTD = dec.last_hidden_state[:, -T - 1:-1, :]  # position t predicts completion token t
        logp_N, ent_N = chunked_logp_entropy(
            h_BTD[mask_dev_BT], head.weight, completion_ids_BT.to(device)[mask_dev_BT], bias_V=head.bias,
            temperature=temperature, chunk_size=chunk_size, need_entropy=need_entropy)
        zeros_BT = torch.zeros(mask_dev_BT.shape, dtype=logp_N.dtype, device=device)
        return ForwardOut(
            zeros_BT.masked_scatter(mask_dev_BT, logp_N),
            zeros_BT.masked_scatter(mask_dev_BT, ent_N) if need_entropy else None,
            dec.hidden_states[-1][:, -T:, :].float() if need_hidden else None, None)
    out = model(
        input_ids=ids_BL,
        attention_mask=attn_BL.long(),
        position_ids=pos_BL,
        use_cache=False,
        output_hidden_states=need_hidden,
        logits_to_keep=T + 1,  # positions Lp-1 … L-1; the last one predicts past the end
    )
    logits_BTV = out.logits[:, :-1, :] / temperature
    ids_BT = completion_ids_BT.to(device)
    logp_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    logp_BT = logp_BTV.gather(-1, ids_BT.unsqueeze(-1)).squeeze(-1)
    entropy_BT = -(logp_BTV.exp() * logp_BTV).sum(-1) if need_entropy else None
    hidden_BTD = out.hidden_states[-1][:, -T:, :].float() if need_hidden else None
    return ForwardOut(logp_BT, entropy_BT, hidden_BTD, logits_BTV.float() if need_logits else None)
