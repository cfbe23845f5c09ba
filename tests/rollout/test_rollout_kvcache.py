"""The preallocated KV cache gives the same logits as transformers' stock DynamicCache."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from entrolab.models.tiny import build_tiny_model
from entrolab.models.tokenizer import build_char_tokenizer
from entrolab.rollout.kvcache import PreallocLayer, new_cache
from entrolab.rollout.sampler import _forward_kwargs


def _run(model, cache, ids_BL, steps):
    """Prefill, expand rows [0, 0, 1], decode ``steps`` tokens, drop row 1, decode once more."""
    cache_kw, _ = _forward_kwargs(model)
    pos_BL = torch.arange(ids_BL.shape[1]).expand_as(ids_BL)
    out = model(input_ids=ids_BL, position_ids=pos_BL, use_cache=True, **{cache_kw: cache})
    sel = torch.tensor([0, 0, 1])
    cache.reorder_cache(sel)
    logits = [out.logits[sel, -1]]
    tok_b = torch.tensor([4, 5, 6])
    pos = ids_BL.shape[1]
    for _ in range(steps):
        out = model(input_ids=tok_b[:, None], position_ids=torch.full((tok_b.numel(), 1), pos),
                    use_cache=True, **{cache_kw: cache})
        logits.append(out.logits[:, -1])
        pos += 1
    keep = torch.tensor([0, 2])
    cache.reorder_cache(keep)
    out = model(input_ids=tok_b[keep][:, None], position_ids=torch.full((2, 1), pos), use_cache=True,
                **{cache_kw: cache})
    logits.append(out.logits[:, -1])
    return logits, cache.get_seq_length()


def test_prealloc_cache_matches_dynamic_cache_including_growth():
    tok = build_char_tokenizer("abcdefgh")
    model = build_tiny_model("tiny", tok, seed=0).eval()
    ids_BL = torch.tensor([[1, 4, 5, 6], [1, 7, 7, 8]])
    with torch.no_grad():
        # Capacity 6 < 4 + 4 + 1 positions: the buffer has to grow (doubling) mid-run.
        pre = new_cache(model, capacity=6)
        assert all(isinstance(layer, PreallocLayer) for layer in pre.layers)
        got, n_got = _run(model, pre, ids_BL, steps=4)
        want, n_want = _run(model, DynamicCache(config=model.config), ids_BL, steps=4)
    assert n_got == n_want == 9
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want))
    assert pre.layers[0].capacity == 12


def test_prealloc_crop_drops_positions_like_dynamic_layer():
    layer = PreallocLayer(capacity=8)
    k = torch.arange(2 * 1 * 5 * 3, dtype=torch.float32).view(2, 1, 5, 3)
    layer.update(k, -k)
    layer.crop(-2)
    assert layer.get_seq_length() == 3 and torch.equal(layer.keys, k[:, :, :3])
    layer.update(k[:, :, :1], -k[:, :, :1])  # the next write lands at position 3
    assert torch.equal(layer.values[:, :, 3], -k[:, :, 0])
