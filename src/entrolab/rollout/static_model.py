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
#: RoPE variants whose frequencies HF fixes at init (``rotary_emb.inv_freq``, read here) with cos/sin
#: unscaled; "dynamic" and "longrope" change them with the sequence length, "yarn" scales cos/sin.
STATIC_ROPE = ("default", "linear", "llama3")
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


def _inert(hook) -> bool:
    """Hooks that change no output value, so reading the weights directly loses nothing:
    transformers 5's output-capture hooks (left on decoder layers once a forward asked for hidden
    states or attentions; they only record), and the hook activation checkpointing puts on the input
    embeddings (``enable_input_require_grads``: it marks the output as requiring grad, for backward
    through checkpointed layers; sampling runs without grad)."""
    module = getattr(hook, "__module__", "") or ""
    name = getattr(hook, "__qualname__", "")
    return (module.startswith("transformers.utils.") and "captur" in name) or (
        module.startswith("transformers.") and name.startswith("PreTrainedModel.enable_input_require_grads."))


def _check(model: torch.nn.Module) -> str | None:
    cls, cfg = type(model).__name__, getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None)
    if SUPPORTED.get(model_type) != cls:
        return f"{cls} (model_type {model_type!r}) is not one of {sorted(SUPPORTED.values())}"
    if getattr(cfg, "hidden_act", None) != "silu":
        return f"hidden_act {cfg.hidden_act!r} (only silu)"
    if _rope_type(cfg) not in STATIC_ROPE:
        return f"rope scaling {_rope_type(cfg)!r} (only {', '.join(STATIC_ROPE)})"
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
        if any(not _inert(h) for h in (*mod._forward_hooks.values(), *mod._forward_pre_hooks.values())):
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
    RoPE of a kind in ``STATIC_ROPE`` (default, linear, llama3), full attention in every layer (no sliding window), any attention/MLP biases, GQA,
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


def _fuse(mods: list[torch.nn.Linear], dtype: torch.dtype):
    """One ``(weight, bias)`` stacking the outputs of ``mods`` (a copy): one GEMM instead of several."""
    w = torch.cat([m.weight.detach() for m in mods]).to(dtype)
    if all(m.bias is None for m in mods):
        return w, None
    return w, torch.cat([m.weight.new_zeros(m.out_features) if m.bias is None else m.bias.detach()
                         for m in mods]).to(dtype)


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
    def from_model(cls, model: torch.nn.Module, dtype: torch.dtype | None = None, *,
                   fuse: bool = False) -> "DecoderWeights":
        """Read the weights of a supported model (``static_support(model) is None``).

        ``fuse`` stacks q/k/v and gate/up into one weight each (a copy of those weights, made per
        call): on a GPU a decode step at batch 512 is bound by the number of kernels, not by FLOPs.
        """
        reason = static_support(model)
        if reason is not None:
            raise ValueError(f"the static decoder does not support this model: {reason}")
        cfg, body = model.config, model.model
        dtype = dtype or body.embed_tokens.weight.dtype
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        layers = []
        for layer in body.layers:
            att, mlp = layer.self_attn, layer.mlp
            lw = {"ln1": layer.input_layernorm.weight.detach().to(dtype),
                  "ln2": layer.post_attention_layernorm.weight.detach().to(dtype),
                  "o_proj": _lin(att.o_proj, dtype), "down_proj": _lin(mlp.down_proj, dtype)}
            if fuse:
                lw["qkv_proj"] = _fuse([att.q_proj, att.k_proj, att.v_proj], dtype)
                lw["gate_up_proj"] = _fuse([mlp.gate_proj, mlp.up_proj], dtype)
            else:
                lw.update({name: _lin(getattr(att, name), dtype) for name in ("q_proj", "k_proj", "v_proj")})
                lw.update({name: _lin(getattr(mlp, name), dtype) for name in ("gate_proj", "up_proj")})
            layers.append(lw)
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
    """RMSNorm (Zhang & Sennrich 2019) as HF computes it: normalised in float32, cast back, then scaled."""
    return w * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def rope(pos: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin ``[..., D]`` of rotary embeddings (Su et al. 2021, RoFormer eq. 34) at integer
    positions, angles in float32 as HF computes them. HF rotates with ``rotate_half(x) · sin`` where
    ``rotate_half(x) = [−x₂, x₁]``; with ``sin = [s, s]`` that equals ``[x₂, x₁] · [−s, s]`` exactly, so
    the sign goes into the table once per step instead of a negation per layer."""
    freqs = pos[..., None].float() * inv_freq
    cos, sin = freqs.cos().to(dtype), freqs.sin().to(dtype)
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to ``x [B, H, L, D]`` with the ``rope`` tables ``[B, L, D]``."""
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return torch.addcmul(x * cos.unsqueeze(1), swapped, sin_signed.unsqueeze(1))


def _qkv(lw: dict, x: torch.Tensor, H: int, Hkv: int, D: int) -> tuple[torch.Tensor, ...]:
    """Query, key and value projections ``[..., H·D]``, ``[..., Hkv·D]`` ×2 (one GEMM when fused)."""
    if "qkv_proj" in lw:
        return F.linear(x, *lw["qkv_proj"]).split([H * D, Hkv * D, Hkv * D], dim=-1)
    return tuple(F.linear(x, *lw[name]) for name in ("q_proj", "k_proj", "v_proj"))


def _residual_linear(h: torch.Tensor, x: torch.Tensor, wb: tuple) -> torch.Tensor:
    """``h + x Wᵀ (+ b)``; for 2-D inputs without bias one GEMM that adds the residual in its epilogue."""
    w, b = wb
    if b is None and h.dim() == 2:
        return torch.addmm(h, x, w.t())
    return h + F.linear(x, w, b)


def _mlp(h: torch.Tensor, lw: dict, x: torch.Tensor) -> torch.Tensor:
    """``h + down(silu(gate(x)) · up(x))`` (SwiGLU, Shazeer 2020)."""
    if "gate_up_proj" in lw:
        gate, up = F.linear(x, *lw["gate_up_proj"]).chunk(2, dim=-1)
    else:
        gate, up = F.linear(x, *lw["gate_proj"]), F.linear(x, *lw["up_proj"])
    return _residual_linear(h, F.silu(gate) * up, lw["down_proj"])


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
        q, k, v = _qkv(lw, rms_norm(h, lw["ln1"], W.eps), H, Hkv, D)
        q = _rotate(q.reshape(B, L, H, D).transpose(1, 2), cos, sin)
        k = _rotate(k.reshape(B, L, Hkv, D).transpose(1, 2), cos, sin)
        v = v.reshape(B, L, Hkv, D).transpose(1, 2)
        kv.append((k, v))
        rep = H // Hkv
        a = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                           attn_mask=allow_B1LL, scale=D ** -0.5)
        h = _residual_linear(h, a.transpose(1, 2).reshape(B, L, H * D), lw["o_proj"])
        h = _mlp(h, lw, rms_norm(h, lw["ln2"], W.eps))
    return rms_norm(h, W.norm, W.eps), kv


def logits(W: DecoderWeights, h: torch.Tensor) -> torch.Tensor:
    """LM-head logits of final-normed hidden states."""
    return F.linear(h, *W.head)


def _decode_qkv(lw: dict, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, H: int, Hkv: int,
                D: int) -> tuple[torch.Tensor, ...]:
    """Rotated query ``[B, H, 1, D]``, rotated key and value ``[B, Hkv, 1, D]`` of one decoding step;
    with fused weights q and k are adjacent in the GEMM's output and rotate as one tensor."""
    B = x.shape[0]
    if "qkv_proj" in lw:
        qkv = F.linear(x, *lw["qkv_proj"])
        qk = _rotate(qkv[:, :(H + Hkv) * D].reshape(B, H + Hkv, 1, D), cos, sin)
        return qk[:, :H], qk[:, H:], qkv[:, (H + Hkv) * D:].reshape(B, Hkv, 1, D)
    q, k, v = _qkv(lw, x, H, Hkv, D)
    return (_rotate(q.reshape(B, H, 1, D), cos, sin), _rotate(k.reshape(B, Hkv, 1, D), cos, sin),
            v.reshape(B, Hkv, 1, D))


def decode_forward(W: DecoderWeights, tok_B: torch.Tensor, pos_B: torch.Tensor, slot_1: torch.Tensor,
                   valid_BS: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One decoding step over static buffers; returns next-token logits ``[B, V]``.

    Writes each layer's key/value of ``tok_B`` (at positions ``pos_B``) into cache slot ``slot_1``
    and marks that slot valid in ``valid_BS`` (in place), then attends over all S slots with
    ``valid_BS`` as the mask (turned once per step into an additive bias shared by the layers). No
    shape depends on the step and nothing reads a value back to the host, so the step can be captured
    in a CUDA graph. Grouped-query attention without copying the cache: the ``rep = H / Hkv`` query
    heads that share a KV head are laid out as ``rep`` query rows of that head (HF's ``repeat_kv``
    maps query head h to KV head h // rep).
    """
    B = tok_B.shape[0]
    H, Hkv, D = W.n_heads, W.n_kv, W.head_dim
    valid_BS.index_fill_(1, slot_1, True)
    bias_B11S = torch.zeros(valid_BS.shape, dtype=W.dtype, device=valid_BS.device).masked_fill_(
        ~valid_BS, float("-inf"))[:, None, None, :]
    cos, sin = rope(pos_B[:, None], W.inv_freq, W.dtype)       # [B, 1, D]
    h = F.embedding(tok_B, W.embed)                              # [B, Dm]
    for lw, (kc, vc) in zip(W.layers, cache):
        q, k, v = _decode_qkv(lw, rms_norm(h, lw["ln1"], W.eps), cos, sin, H, Hkv, D)
        kc.index_copy_(2, slot_1, k)
        vc.index_copy_(2, slot_1, v)
        a = F.scaled_dot_product_attention(q.reshape(B, Hkv, H // Hkv, D), kc, vc, attn_mask=bias_B11S,
                                           scale=D ** -0.5)
        h = _residual_linear(h, a.reshape(B, H * D), lw["o_proj"])
        h = _mlp(h, lw, rms_norm(h, lw["ln2"], W.eps))
    return logits(W, rms_norm(h, W.norm, W.eps))
