"""PAR and the shaping baselines: hand values, reference caching, running statistics by brute force."""

import math

import pytest
import torch

from entrolab.registry import SHAPERS
from entrolab.rewards.par import lsc_transform, par_transform


def test_par_transform_hand():
    """r = 1, refs [0, 1]: (σ(1) + σ(0))/2 = (.731059 + .5)/2 = .615529; padding is ignored."""
    out = par_transform(torch.tensor([1.0]), torch.tensor([[0.0, 1.0, 99.0]]), torch.tensor([[True, True, False]]))
    assert out.item() == pytest.approx(0.615529, abs=1e-6)


def test_lsc_hand():
    """refs [0, 2]: μ 1, σ 1 (ddof 0) ⇒ q = 2.0364; r = 2 ⇒ log σ(−.0364) = −.711497."""
    out = lsc_transform(torch.tensor([2.0]), torch.tensor([[0.0, 2.0]]), torch.ones(1, 2, dtype=torch.bool))
    assert out.item() == pytest.approx(math.log(1 / (1 + math.exp(0.0364))), abs=1e-6)


def test_first_seen_references_are_cached_and_checkpointed(make_batch):
    b1 = make_batch([1.0, 0.0, 3.0, 3.0], [0, 0, 1, 1])
    par = SHAPERS.build("par")
    out1, m = par(b1.rewards_B, b1, None)
    s = 1 / (1 + math.exp(-1))
    assert out1.tolist() == pytest.approx([(s + 0.5) / 2, (0.5 + 1 - s) / 2, 0.5, 0.5])
    state = par.state_dict()
    b2 = make_batch([2.0, 2.0, 0.0, 0.0], [0, 0, 1, 1])  # new rewards, same prompts: refs stay
    out2, _ = par(b2.rewards_B, b2, None)
    clone = SHAPERS.build("par")
    clone.load_state_dict(state)
    assert torch.equal(clone(b2.rewards_B, b2, None)[0], out2)
    cen, _ = SHAPERS.build("centered")(b1.rewards_B, b1, None)
    assert cen.tolist() == [0.5, -0.5, 0.0, 0.0]


def test_meta_references_and_missing(make_batch):
    b = make_batch([1.0, 0.0], [0, 0])
    shaper = SHAPERS.build("centered", {"ref_source": "meta"})
    with pytest.raises(ValueError, match="'p0'"):
        shaper(b.rewards_B, b, None)
    b.prompts[0].meta["ref_rewards"] = [0.25, 0.75]
    assert shaper(b.rewards_B, b, None)[0].tolist() == [0.5, -0.5]


def test_running_baselines_brute_force(make_batch):
    seen = []
    shapers = {n: SHAPERS.build(n) for n in ("meanstd", "clip", "minmax")}
    for vals in ([0.0, 2.0], [5.0], [-1.0, 1.0, 1.0]):
        b = make_batch(vals, [0] * len(vals))
        seen += vals
        t = torch.tensor(seen, dtype=torch.float64)
        mu, sd = t.mean().item(), t.std(unbiased=False).item()
        r = torch.tensor(vals)
        assert shapers["meanstd"](r, b, None)[0].tolist() == pytest.approx(((r - mu) / (sd + 1e-8)).tolist(), abs=1e-5)
        assert shapers["clip"](r, b, None)[0].tolist() == pytest.approx(r.clamp(mu - sd, mu + sd).tolist(), abs=1e-5)
        lo, hi = min(seen), max(seen)
        assert shapers["minmax"](r, b, None)[0].tolist() == pytest.approx(((r - lo) / (hi - lo)).tolist(), abs=1e-6)
    b = make_batch([3.0, 3.0], [0, 0])
    assert SHAPERS.build("minmax")(b.rewards_B, b, None)[0].tolist() == [0.0, 0.0]
