"""Shared settings for the rollout tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny-model forwards are latency-bound: on a shared 2-core machine, torch's default
    thread pool spends more time waiting for a busy core than computing. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
