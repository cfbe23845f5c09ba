"""How many CPU threads torch uses for a model: one for testbed-sized models, unless the user chose.

Tiny models do too little work per operation for a second thread to pay for its synchronisation;
on a machine whose cores are busy with other processes, two threads are far slower than one (the
measurement, ``python benchmarks/threads.py``, is in docs/benchmarks.md). So for models up to
``SMALL_MODEL_PARAMS`` parameters on CPU we set ``torch.set_num_threads(1)``; larger models, GPU
runs and any process started with ``OMP_NUM_THREADS`` set keep torch's own choice.
"""

from __future__ import annotations

import os
from typing import Mapping

import torch

#: Models with at most this many parameters count as small (the testbed's sizes are 0.86M and 5.1M).
SMALL_MODEL_PARAMS = 20_000_000


def chosen_threads(num_params: int, *, device_type: str, env: Mapping[str, str]) -> int | None:
    """The torch thread count to set, or None to leave torch's choice alone.

    One thread for a small model (≤ ``SMALL_MODEL_PARAMS``) on CPU; None on GPU, for larger models,
    or when ``OMP_NUM_THREADS`` is set in ``env`` (the user's explicit choice wins).
    """
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    if device_type != "cpu" or num_params > SMALL_MODEL_PARAMS:
        return None
    return 1


def apply_thread_policy(model: torch.nn.Module, device: torch.device | str = "cpu") -> int | None:
    """Apply ``chosen_threads`` to this process for ``model`` on ``device``; returns what was set.

    Process-wide and not undone: the phases after training (evaluation) run the same model size.
    """
    n = chosen_threads(sum(p.numel() for p in model.parameters()), device_type=torch.device(device).type,
                       env=os.environ)
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
