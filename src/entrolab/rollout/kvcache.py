"""A ``DynamicCache`` whose layers write into preallocated buffers instead of concatenating.

transformers' ``DynamicLayer.update`` does ``torch.cat([keys, new])`` every decoding step, which
copies the whole cache each step (quadratic in length). For the testbed's tiny models that copy
costs more than the matmuls. ``PreallocLayer`` keeps one buffer of ``capacity`` positions and
exposes ``keys``/``values`` as views of the filled part, so everything that reads a
``DynamicLayer`` (mask sizes, ``get_seq_length``, iteration) sees the usual tensors. It grows by
doubling if ever full. Models whose cache layers are not plain ``DynamicLayer`` (sliding-window or
hybrid attention), and transformers versions without per-layer caches, get the stock cache.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

try:  # transformers >= 4.56 has per-layer cache objects
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers
    DynamicLayer = None  # type: ignore[assignment,misc]


if DynamicLayer is not None:

    class PreallocLayer(DynamicLayer):  # type: ignore[misc,valid-type]
        """A full-attention cache layer backed by a buffer of ``capacity`` positions."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = max(1, int(capacity))
            self._kbuf: torch.Tensor | None = None
            self._vbuf: torch.Tensor | None = None
            self._len = 0

        def _alloc(self, like_k: torch.Tensor, like_v: torch.Tensor, capacity: int) -> None:
            B, H, _, Dk = like_k.shape
            kbuf = like_k.new_empty((B, H, capacity, Dk))
            vbuf = like_v.new_empty((B, like_v.shape[1], capacity, like_v.shape[-1]))
            if self._kbuf is not None:  # growing: keep what is filled
                kbuf[:, :, : self._len] = self._kbuf[:, :, : self._len]
                vbuf[:, :, : self._len] = self._vbuf[:, :, : self._len]
            self._kbuf, self._vbuf, self.capacity = kbuf, vbuf, capacity

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._alloc(key_states, value_states, max(self.capacity, key_states.shape[-2]))
            n = key_states.shape[-2]
            if self._len + n > self.capacity:
                self._alloc(key_states, value_states, max(2 * self.capacity, self._len + n))
            self._kbuf[:, :, self._len : self._len + n] = key_states
            self._vbuf[:, :, self._len : self._len + n] = value_states
            self._len += n
            self.keys = self._kbuf[:, :, : self._len]
            self.values = self._vbuf[:, :, : self._len]
            return self.keys, self.values

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            if self._kbuf is None:
                return
            idx = beam_idx.to(self._kbuf.device)
            self._kbuf = self._kbuf.index_select(0, idx)
            self._vbuf = self._vbuf.index_select(0, idx)
            self.keys = self._kbuf[:, :, : self._len]
            self.values = self._vbuf[:, :, : self._len]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.reorder_cache(indices)

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self._kbuf is None:
                return
            idx = torch.arange(self._kbuf.shape[0], device=self._kbuf.device).repeat_interleave(repeats)
            self.reorder_cache(idx)

        def crop(self, tokens_to_remove: int) -> None:
            # Same convention as DynamicLayer.crop: a negative count of positions to drop.
            if tokens_to_remove > 0:
                raise ValueError(f"crop takes a negative number of positions to drop, got {tokens_to_remove}")
            if self._kbuf is None or tokens_to_remove == 0:
                return
            self._len = max(0, self._len + tokens_to_remove)
            self.keys = self._kbuf[:, :, : self._len]
            self.values = self._vbuf[:, :, : self._len]

        def reset(self) -> None:
            super().reset()
            self._kbuf = self._vbuf = None
            self._len = 0


def new_cache(model: torch.nn.Module, capacity: int) -> DynamicCache:
    """A ``DynamicCache`` for ``model``, preallocated for ``capacity`` positions when possible."""
    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # pragma: no cover - transformers < 4.56 takes no config
        return DynamicCache()
    layers = getattr(cache, "layers", None)
    if DynamicLayer is not None and layers and all(type(layer) is DynamicLayer for layer in layers):
        cache.layers = [PreallocLayer(capacity) for _ in layers]
    return cache
