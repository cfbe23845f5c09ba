"""Thread policy for testbed models (issue 8 item 10): one torch thread for small CPU models.

Measured in docs/benchmarks.md (benchmarks/threads.py): on a loaded 2-core machine, tiny models
with two threads are several times slower than with one.
"""

import pytest
import torch


def test_item10_chosen_threads_table():
    from entrolab.threads import SMALL_MODEL_PARAMS, chosen_threads

    assert chosen_threads(860_000, device_type="cpu", env={}) == 1
    assert chosen_threads(SMALL_MODEL_PARAMS, device_type="cpu", env={}) == 1
    assert chosen_threads(SMALL_MODEL_PARAMS + 1, device_type="cpu", env={}) is None
    assert chosen_threads(860_000, device_type="cuda", env={}) is None
    assert chosen_threads(860_000, device_type="cpu", env={"OMP_NUM_THREADS": "2"}) is None
    assert chosen_threads(860_000, device_type="cpu", env={"OMP_NUM_THREADS": ""}) == 1


@pytest.mark.parametrize("omp, expected", [(None, 1), ("2", 2)])
def test_item10_training_a_testbed_model_uses_one_thread(tmp_path, monkeypatch, omp, expected):
    """Without OMP_NUM_THREADS the tiny model trains on one thread; with it, the user's choice stays."""
    from test_trainer import recipe

    from entrolab.trainer import Trainer

    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Trainer(recipe(tmp_path, **{"train.steps": 1}), progress=False).train()
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
