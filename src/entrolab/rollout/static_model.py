"""Our own forward of Llama-family HF decoders over a static KV cache (the model half of ``rollout.engine: static``).

Why our own forward: HF's per-layer modules, cache objects and mask builders cost tens of
milliseconds of Python per decoded token at real sizes, and their shapes change every step, so a
decode step can neither be captured in a CUDA graph nor run without host syncs. Here a decode
step is a fixed sequence of tensor ops over buffers allocated once: KV caches ``[B, Hkv, S, D]``
per layer (S = prompt width + max_new_tokens, rounded up to 8), a write slot held in a 1-element
device tensor and a valid-key mask ``[B, S]``.

The math is the HF modelling code's (transformers ``modeling_llama``/``modeling_qwen2``): RMSNorm in
float32 then cast back, rotary embeddings from ``rotary_emb.inv_freq`` (default RoPE, cos/sin
computed in float32), grouped-query attention with scale ``head_dim ** -0.5``, SwiGLU MLP, final
norm and LM head. Weights are read from the HF modules directly (no copy unless another dtype is
asked for), so LoRA-free training updates are seen by the next rollout.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: ``config.model_type`` → the one HF class whose forward this module reproduces.
SUPPORTED = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
_SUPPORT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> reason (None = supported)


def _rope_type(cfg) -> str:
    """The RoPE variant named by the config (transformers 5 ``rope_parameters``, 4.x ``rope_scaling``)."""
    for key in ("rope_parameters", "rope_scaling"):
        rp = getattr(cfg, key, None)
        if isinstance(rp, dict) and rp:
            kind = rp.get("rope_type", rp.get("type", "default"))
            if kind != "default":
                return str(kind)
    return "default"


def _check(model: torch.nn.Module) -> str | None:
    cls, cfg = type(model).__name__, getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None)
    if SUPPORTED.get(model_type) != cls:
        return f"{cls} (model_type {model_type!r}) is not one of {sorted(SUPPORTED.values())}"
    if getattr(cfg, "hidden_act", None) != "silu":
        return f"hidden_act {cfg.hidden_act!r} (only silu)"
    if _rope_type(cfg) != "default":
        return f"rope scaling {_rope_type(cfg)!r} (only default RoPE)"
    if getattr(cfg, "use_sliding_window", False) or (model_type == "mistral" and cfg.sliding_window is not None):
        return f"sliding-window attention (sliding_window={cfg.sliding_window})"
    kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        return f"layer_types {sorted(kinds)} (only full_attention)"
    for key in ("final_logit_softcapping", "attn_logit_softcapping", "logit_scale"):
        if getattr(cfg, key, None) is not None:
            return f"config.{key} is set"
    for name, mod in model.named_modules():
        # Hooks (accelerate offload, adapters, probes) would be skipped by reading weights directly.
        if mod._forward_hooks or mod._forward_pre_hooks:
            return f"module {name or type(mod).__name__} has forward hooks"
        if isinstance(mod, torch.nn.Linear) and type(mod) is not torch.nn.Linear:
            return f"module {name} is a {type(mod).__name__}, not a plain torch.nn.Linear"
    if rotary_of(model).attention_scaling != 1.0:
        return f"rotary attention_scaling {rotary_of(model).attention_scaling}"
    if any(not p.is_floating_point() for p in model.parameters()):
        return "non-floating-point (quantized) weights"
    return None


def static_support(model: torch.nn.Module) -> str | None:
    """None if ``model``'s forward is reproduced by this module, else the reason it is not (cached per model).

    Supported: plain ``LlamaForCausalLM``, ``Qwen2ForCausalLM`` and ``MistralForCausalLM`` with silu,
    default RoPE, full attention in every layer (no sliding window), any attention/MLP biases, GQA,
    tied or untied head. Anything wrapped (peft's LoRA models are ``PeftModel``s), hooked or
    quantized is refused, so callers fall back to the builtin loop.
    """
    if model not in _SUPPORT:
        try:
            _SUPPORT[model] = _check(model)
        except AttributeError as err:  # a config or module tree of another layout
            _SUPPORT[model] = f"unexpected layout ({err})"
    return _SUPPORT[model]


def rotary_of(model: torch.nn.Module):
    return model.model.rotary_emb


def _lin(mod: torch.nn.Linear, dtype: torch.dtype):
    w, b = mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
    return w.to(dtype), None if b is None else b.to(dtype)  # .to is a no-op (no copy) at the same dtype


@dataclass
class DecoderWeights:
    """The tensors of one decoder, in the compute dtype (views of the model's own when dtypes agree)."""

    embed: torch.Tensor
    layers: list[dict]
    norm: torch.Tensor
    head: tuple[torch.Tensor, torch.Tensor | None]
    inv_freq: torch.Tensor            # float32 [D/2]
    eps: float
    n_heads: int
    n_kv: int
    head_dim: int

    @classmethod
    def from_model(cls, model: torch.nn.Module, dtype: torch.dtype | None = None) -> "DecoderWeights":
        """Read the weights of a supported model (``static_support(model) is None``)."""
        reason = static_support(model)
        if reason is not None:
            raise ValueError(f"the static decoder does not support this model: {reason}")
        cfg, body = model.config, model.model
        dtype = dtype or body.embed_tokens.weight.dtype
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        layers = []
        for layer in body.layers:
            att, mlp = layer.self_attn, layer.mlp
            layers.append({
                "ln1": layer.input_layernorm.weight.detach().to(dtype),
                "ln2": layer.post_attention_layernorm.weight.detach().to(dtype),
                **{name: _lin(getattr(att, name), dtype) for name in ("q_proj", "k_proj", "v_proj", "o_proj")},
                **{name: _lin(getattr(mlp, name), dtype) for name in ("gate_proj", "up_proj", "down_proj")},
            })
        return cls(embed=body.embed_tokens.weight.detach().to(dtype), layers=layers,
                   norm=body.norm.weight.detach().to(dtype), head=_lin(model.lm_head, dtype),
                   inv_freq=rotary_of(model).inv_freq.detach().float(), eps=float(cfg.rms_norm_eps),
                   n_heads=cfg.num_attention_heads, n_kv=cfg.num_key_value_heads, head_dim=head_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    def new_cache(self, batch: int, slots: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zeroed ``(k, v)`` buffers ``[batch, Hkv, slots, D]`` per layer."""
        shape = (batch, self.n_kv, slots, self.head_dim)
        return [(self.embed.new_zeros(shape), self.embed.new_zeros(shape)) for _ in self.layers]


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm (Zhang & Sennrich 2019) as HF computes it: in float32, cast back, then scaled."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return w * x32.to(x.dtype)


def rope(pos: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[..., D]`` of rotary embeddings (Su et al. 2021, RoFormer eq. 34) at integer positions."""
    freqs = pos[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to ``x [B, H, L, D]`` with ``cos``/``sin`` ``[B, L, D]`` (HF's rotate_half layout)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _mlp(W: dict, x: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, *W["gate_proj"])) * F.linear(x, *W["up_proj"]), *W["down_proj"])


def prefill(W: DecoderWeights, ids_BL: torch.Tensor, mask_BL: torch.Tensor
            ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Forward left-padded prompts; returns the final-normed hidden states ``[B, L, Dm]`` and each
    layer's rotated keys and values ``[B, Hkv, L, D]`` (for the caller to copy into its cache).

    Positions count real tokens (``cumsum(mask) − 1``, the convention of ``models.forward``). A pad
    query may attend to itself only: its row is never read by a real token (pads are masked as keys)
    and a row with no allowed key would give NaN.
    """
    B, L = ids_BL.shape
    H, Hkv, D = W.n_heads, W.n_kv, W.head_dim
    pos_BL = (mask_BL.long().cumsum(-1) - 1).clamp(min=0)
    cos, sin = rope(pos_BL, W.inv_freq, W.dtype)
    eye_LL = torch.eye(L, dtype=torch.bool, device=ids_BL.device)
    causal_LL = torch.ones(L, L, dtype=torch.bool, device=ids_BL.device).tril()
    allow_B1LL = ((causal_LL & mask_BL[:, None, :]) | eye_LL).unsqueeze(1)
    h = F.embedding(ids_BL, W.embed)
    kv = []
    for lw in W.layers:
        x = rms_norm(h, lw["ln1"], W.eps)
        q = _rotate(F.linear(x, *lw["q_proj"]).view(B, L, H, D).transpose(1, 2), cos, sin)
        k = _rotate(F.linear(x, *lw["k_proj"]).view(B, L, Hkv, D).transpose(1, 2), cos, sin)
        v = F.linear(x, *lw["v_proj"]).view(B, L, Hkv, D).transpose(1, 2)
        kv.append((k, v))
        rep = H // Hkv
        a = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                           attn_mask=allow_B1LL, scale=D ** -0.5)
        h = h + F.linear(a.transpose(1, 2).reshape(B, L, H * D), *lw["o_proj"])
        h = h + _mlp(lw, rms_norm(h, lw["ln2"], W.eps))
    return rms_norm(h, W.norm, W.eps), kv


def logits(W: DecoderWeights, h: torch.Tensor) -> torch.Tensor:
    """LM-head logits of final-normed hidden states."""
    return F.linear(h, *W.head)


def decode_forward(W: DecoderWeights, tok_B: torch.Tensor, pos_B: torch.Tensor, slot_1: torch.Tensor,
                   valid_BS: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One decoding step over static buffers; returns next-token logits ``[B, V]``.

    Writes each layer's key/value of ``tok_B`` (at positions ``pos_B``) into cache slot ``slot_1``
    and marks that slot valid in ``valid_BS`` (in place), then attends over all S slots with
    ``valid_BS`` as the mask. No shape depends on the step and nothing reads a value back to the
    host, so the step can be captured in a CUDA graph. Grouped-query attention without copying the
    cache: the ``rep = H / Hkv`` query heads that share a KV head are laid out as ``rep`` query rows
    of that head (HF's ``repeat_kv`` maps query head h to KV head h // rep).
    """
    B = tok_B.shape[0]
    H, Hkv, D = W.n_heads, W.n_kv, W.head_dim
    valid_BS.index_fill_(1, slot_1, True)
    mask_B11S = valid_BS[:, None, None, :]
    cos, sin = rope(pos_B[:, None], W.inv_freq, W.dtype)       # [B, 1, D]
    h = F.embedding(tok_B, W.embed)                              # [B, Dm]
    for lw, (kc, vc) in zip(W.layers, cache):
        x = rms_norm(h, lw["ln1"], W.eps)
        q = _rotate(F.linear(x, *lw["q_proj"]).view(B, H, 1, D), cos, sin)
        k = _rotate(F.linear(x, *lw["k_proj"]).view(B, Hkv, 1, D), cos, sin)
        kc.index_copy_(2, slot_1, k)
        vc.index_copy_(2, slot_1, F.linear(x, *lw["v_proj"]).view(B, Hkv, 1, D))
        a = F.scaled_dot_product_attention(q.view(B, Hkv, H // Hkv, D), kc, vc, attn_mask=mask_B11S,
                                           scale=D ** -0.5)
        h = h + F.linear(a.reshape(B, H * D), *lw["o_proj"])
        h = h + _mlp(lw, rms_norm(h, lw["ln2"], W.eps))
    return logits(W, rms_norm(h, W.norm, W.eps))
