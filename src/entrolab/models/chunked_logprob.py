"""Memory-lean per-token log-probs and entropies from hidden states and the LM-head weight.

The naive path materialises the logits ``[T, V]`` (and its log-softmax and exp) for every token:
at V = 152k and T = 8k that is ~5 GB per ``[T, V]`` float32 tensor. Here tokens are processed in
chunks of ``chunk_size``: the forward keeps only each token's log-sum-exp and entropy, and the
backward recomputes one chunk's logits at a time and applies closed-form gradients, so the extra
memory is O(chunk_size × V) whatever T is (verl's ``FusedLinearForPPO`` does the same in PyTorch).

With z = (h Wᵀ + b) / τ, p = softmax(z), log p = z − logsumexp(z):

* log-prob of the sampled token y:  ∂ log p_y / ∂z = onehot(y) − p
* entropy H = −Σ_v p_v log p_v:      ∂H / ∂z = −p ⊙ (log p + H)

and the chain rule through z gives ∂/∂h = g_z W / τ, ∂/∂W = g_zᵀ h / τ, ∂/∂b = Σ_t g_z / τ.

The softmax and everything after it run in float32 even for bf16 h/W (as the naive path does with
``logits.float()``); the matmuls run in ``compute_dtype`` (the autocast dtype when autocast is on,
else the inputs' dtype), as the LM head would run them; the temperature division happens after the
float32 upcast; the weight gradient is accumulated in float32 over chunks.
"""

from __future__ import annotations

import torch

#: Default tokens per chunk (``train.logprob_chunk_size``), chosen with ``benchmarks/chunked_logprob.py``
#: (V = 152k, D = 896, one CPU thread): 256 adds one 156 MB chunk of logits to the 544 MB weight
#: gradient (0.73 GB in all at T = 2048, naive 6.2 GB, at 0.83x the naive time); at T = 512, 128 saved
#: 0.08 GB for 11 % more time and 512 only added memory (docs/benchmarks.md).
DEFAULT_CHUNK_SIZE = 256
#: ``train.logprob_chunk_size: auto`` chunks from this vocabulary size on. Below it a [T, V] tensor is
#: small and the naive path is as fast (docs/benchmarks.md: 740 vs 751 ms per update on the 26-token
#: testbed), and keeping it exact there keeps testbed runs identical to the full-logits path.
AUTO_MIN_VOCAB = 4096


def resolve_chunk_size(setting: int | str, *, vocab_size: int, needs_logits: bool) -> int:
    """Tokens per chunk for ``train.logprob_chunk_size`` (0 = the naive full-logits path).

    A component that needs the full logits forces the naive path; ``"auto"`` chunks by
    ``DEFAULT_CHUNK_SIZE`` when the vocabulary has at least ``AUTO_MIN_VOCAB`` entries.
    """
    if needs_logits:
        return 0
    if setting == "auto":
        return DEFAULT_CHUNK_SIZE if vocab_size >= AUTO_MIN_VOCAB else 0
    return int(setting)


def _chunk_logits(h_CD, w_VD, b_V, temperature: float) -> torch.Tensor:
    """float32 temperature-scaled logits of one chunk, z_CV = (h Wᵀ + b) / τ."""
    z_CV = torch.nn.functional.linear(h_CD, w_VD, b_V)
    z_CV = z_CV.to(torch.promote_types(z_CV.dtype, torch.float32))  # float32 softmax (float64 kept)
    return z_CV.div_(temperature) if temperature != 1.0 else z_CV


_BLOCK_ELEMS = 1 << 20  # elements per row block of the elementwise work (4 MB in float32)


def _row_blocks(n_rows: int, V: int):
    """Row slices for the elementwise softmax work inside a chunk: about 1M elements (4 MB in float32)
    each, so its temporaries stay small next to the chunk's logits (the matmuls keep whole chunks,
    where the GEMM is efficient)."""
    step = max(1, _BLOCK_ELEMS // max(V, 1))
    return [slice(r, r + step) for r in range(0, n_rows, step)]


def _forward_chunk(z_CV, ids_C, logp_C, lse_C, entropy_C) -> None:
    """Fill log p(y), logsumexp and (if ``entropy_C`` is given) the entropy of one chunk's logits.
    Overwrites ``z_CV``. A function of its own so that no view of ``z_CV`` outlives the chunk (a view
    left in a loop variable would keep two chunks of logits alive)."""
    for r in _row_blocks(z_CV.shape[0], z_CV.shape[1]):
        z_RV = z_CV[r]
        lse_R = torch.logsumexp(z_RV, dim=-1)
        lse_C[r] = lse_R
        logp_C[r] = z_RV.gather(1, ids_C[r, None]).squeeze(1) - lse_R
        if entropy_C is not None:
            logq_RV = z_RV.sub_(lse_R[:, None])  # in place: log p (z is not needed again)
            entropy_C[r] = -logq_RV.exp().mul_(logq_RV).sum(-1)


def _logits_to_grad(z_CV, lse_C, a_C, b_C) -> None:
    """Turn one chunk's logits into p·(a − b·log p) in place (``b_C`` None: p·a), row block by row block."""
    for r in _row_blocks(z_CV.shape[0], z_CV.shape[1]):
        logq_RV = z_CV[r].sub_(lse_C[r, None])
        if b_C is None:
            logq_RV.exp_().mul_(a_C[r, None])
        else:
            p_RV = logq_RV.exp()
            logq_RV.mul_(-b_C[r, None]).add_(a_C[r, None]).mul_(p_RV)


class _ChunkedLogpEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_TD, w_VD, b_V, ids_T, temperature, chunk_size, need_entropy, compute_dtype):
        with torch.autocast(h_TD.device.type, enabled=False):
            T = h_TD.shape[0]
            hc_TD, wc_VD = h_TD.to(compute_dtype), w_VD.to(compute_dtype)
            bc_V = None if b_V is None else b_V.to(compute_dtype)
            soft_dtype = torch.promote_types(compute_dtype, torch.float32)
            logp_T = torch.empty(T, dtype=soft_dtype, device=h_TD.device)
            lse_T = torch.empty_like(logp_T)
            entropy_T = torch.empty_like(logp_T) if need_entropy else None
            for s in range(0, T, chunk_size):
                sl = slice(s, min(s + chunk_size, T))
                _forward_chunk(_chunk_logits(hc_TD[sl], wc_VD, bc_V, temperature), ids_T[sl], logp_T[sl],
                               lse_T[sl], entropy_T[sl] if need_entropy else None)
        ctx.save_for_backward(h_TD, w_VD, b_V, ids_T, lse_T, entropy_T)
        ctx.settings = (temperature, chunk_size, need_entropy, compute_dtype)
        if need_entropy:
            return logp_T, entropy_T
        return logp_T

    @staticmethod
    def backward(ctx, *grads):
        h_TD, w_VD, b_V, ids_T, lse_T, entropy_T = ctx.saved_tensors
        temperature, chunk_size, need_entropy, compute_dtype = ctx.settings
        g_logp_T = grads[0]
        g_ent_T = grads[1] if need_entropy else None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(h_TD) if need_h else None
        acc = torch.promote_types(compute_dtype, torch.float32)  # float32 accumulation (float64 kept)
        grad_w = torch.zeros(w_VD.shape, dtype=acc, device=w_VD.device) if need_w else None
        grad_b = torch.zeros(b_V.shape, dtype=acc, device=b_V.device) if need_b else None

        def done():
            return (grad_h, None if grad_w is None else grad_w.to(w_VD.dtype),
                    None if grad_b is None else grad_b.to(b_V.dtype), None, None, None, None, None)

        if g_logp_T is None and g_ent_T is None:
            return done()
        # Per-row scalars with 1/τ folded in (∂z/∂logits = 1/τ):
        #   g_z = (g_logp·(onehot − p) − g_H·p·(log p + H)) / τ = p·(a − b·log p) + onehot·g_logp/τ,
        #   a = −(g_logp + g_H·H)/τ,  b = g_H/τ.
        T = h_TD.shape[0]
        g_lp_T = torch.zeros_like(lse_T) if g_logp_T is None else g_logp_T.to(acc)
        a_T = -g_lp_T / temperature
        b_T = None
        if g_ent_T is not None:
            a_T = a_T - g_ent_T.to(acc) * entropy_T / temperature
            b_T = g_ent_T.to(acc) / temperature
        onehot_T = g_lp_T / temperature
        hc_TD, wc_VD = h_TD.to(compute_dtype), w_VD.to(compute_dtype)
        bc_V = None if b_V is None else b_V.to(compute_dtype)
        with torch.autocast(h_TD.device.type, enabled=False):
            for s in range(0, T, chunk_size):
                sl = slice(s, s + chunk_size)
                h_CD = hc_TD[sl]
                gz_CV = _chunk_logits(h_CD, wc_VD, bc_V, temperature)
                _logits_to_grad(gz_CV, lse_T[sl], a_T[sl], None if b_T is None else b_T[sl])
                if g_logp_T is not None:  # the onehot(y) part of ∂ log p_y/∂z
                    gz_CV.scatter_add_(1, ids_T[sl, None], onehot_T[sl, None])
                gzc_CV = gz_CV.to(compute_dtype)
                if need_h:
                    grad_h[sl] = (gzc_CV @ wc_VD).to(h_TD.dtype)
                if need_w:
                    if compute_dtype == acc:
                        grad_w.addmm_(gzc_CV.t(), h_CD)
                    else:
                        grad_w += gzc_CV.t() @ h_CD
                if need_b:
                    grad_b += gz_CV.sum(0)
                del gz_CV, gzc_CV
        return done()


def chunked_logp_entropy(
    h_TD: torch.Tensor,
    weight_VD: torch.Tensor,
    ids_T: torch.Tensor,
    *,
    bias_V: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    need_entropy: bool = True,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of ``ids_T`` and full-vocabulary entropy under softmax((h Wᵀ + b) / τ), chunked.

    Equal to ``token_logp_entropy(linear(h, W, b) / τ, ids)`` up to float rounding, in value and in
    gradient w.r.t. ``h_TD``, ``weight_VD`` and ``bias_V``, without holding more than one
    ``[chunk_size, V]`` block of logits (forward and backward).

    Args:
        h_TD: final hidden states of the T scored tokens (any float dtype).
        weight_VD: LM-head weight (V × D); ``bias_V``: its bias, if the head has one.
        ids_T: the token whose log-prob is returned at each position (int64, in [0, V)).
        temperature: τ > 0; logits are divided by it before the softmax.
        chunk_size: tokens per chunk of the matmuls (the memory/speed knob: extra memory ≈ chunk_size × V
            × 4 bytes for one chunk's logits, plus a few MB for the softmax temporaries, plus the
            float32 weight gradient).
        need_entropy: when False the entropy (and its gradient work) is skipped and None returned.
        compute_dtype: dtype of the two matmuls; default: the autocast dtype if autocast is enabled
            on ``h_TD``'s device, else ``h_TD.dtype``. The softmax always runs in float32.

    Returns:
        ``(logp_T, entropy_T)``, float32 (float64 for float64 inputs); ``entropy_T`` is None when ``need_entropy`` is False.
    """
    if h_TD.dim() != 2 or weight_VD.dim() != 2 or h_TD.shape[1] != weight_VD.shape[1]:
        raise ValueError(f"chunked_logp_entropy: expected h [T, D] and weight [V, D], got "
                         f"{tuple(h_TD.shape)} and {tuple(weight_VD.shape)}")
    if ids_T.shape != h_TD.shape[:1]:
        raise ValueError(f"chunked_logp_entropy: ids has shape {tuple(ids_T.shape)}, expected ({h_TD.shape[0]},)")
    if not chunk_size >= 1:
        raise ValueError(f"chunked_logp_entropy: chunk_size must be >= 1, got {chunk_size}")
    if not temperature > 0:
        raise ValueError(f"chunked_logp_entropy: temperature must be > 0, got {temperature}")
    if compute_dtype is None:
        dev = h_TD.device.type
        compute_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h_TD.dtype
    out = _ChunkedLogpEntropy.apply(h_TD, weight_VD, bias_V, ids_T.long(), float(temperature), int(chunk_size),
                                    bool(need_entropy), compute_dtype)
    return (out[0], out[1]) if need_entropy else (out, None)
