"""The shared LR schedule (SFT decays to 10 %, RL to 0), hand values."""

import math

import pytest

from entrolab.schedule import lr_factor


def test_warmup_then_decay_to_final():
    # warmup 2: steps 0, 1 → 1/2, 2/2; then cosine over steps 2..6 (frac = (s-2)/4) down to final
    assert lr_factor(0, steps=6, warmup=2, schedule="cosine", final=0.0) == 0.5
    assert lr_factor(1, steps=6, warmup=2, schedule="cosine", final=0.0) == 1.0
    assert lr_factor(4, steps=6, warmup=2, schedule="cosine", final=0.0) == pytest.approx(0.5)
    assert lr_factor(6, steps=6, warmup=2, schedule="cosine", final=0.0) == pytest.approx(0.0)
    assert lr_factor(6, steps=6, warmup=2, schedule="linear", final=0.1) == pytest.approx(0.1)
    assert lr_factor(3, steps=6, warmup=2, schedule="linear", final=0.0) == pytest.approx(0.75)
    assert lr_factor(5, steps=6, warmup=0, schedule="cosine", final=0.2) == pytest.approx(
        1 - 0.8 * 0.5 * (1 - math.cos(math.pi * 5 / 6)))
    assert lr_factor(100, steps=6, warmup=2, schedule="constant") == 1.0


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_factor(0, steps=1, warmup=0, schedule="step")
