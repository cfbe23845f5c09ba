"""The sampler benchmark runs, and our greedy decode agrees with ``model.generate``'s."""

from __future__ import annotations

from entrolab.models.tiny import create_testbed_model
from entrolab.rollout.benchmark import main
from entrolab.tasks.countdown import Countdown


def test_benchmark_smoke_and_greedy_agreement_with_generate(tmp_path):
    path = create_testbed_model(tmp_path / "m", Countdown().charset(), size="tiny", seed=0)
    out = main(["--model", str(path), "--prompts", "3", "--group-size", "2", "--max-new-tokens", "8",
                "--batch-size", "4"])
    assert out["greedy_agree"] == 1.0  # HF generate (greedy) and our KV loop decode the same text
    assert out["rows"] == 6 and out["ours_tokens"] > 0 and out["generate_tokens"] > 0
