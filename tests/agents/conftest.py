"""Fixtures of the agent tests: a tiny base model SFT'd on the counter task's expert episodes."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def counter_base_dir(tmp_path_factory):
    """Folder of a tiny Llama SFT'd (agents' SFT path, ``sft.encode_episode``) on the counter expert."""
    from counter_env import CounterTask
    from entrolab.sft import build_base_model

    return build_base_model(tmp_path_factory.mktemp("bases") / "counter", CounterTask(n=40), steps=120, batch_size=16,
                            lr=1e-2, warmup=5, demos_per_prompt=1, split="train", device="cpu")
