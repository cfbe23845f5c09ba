"""RiskPO: quantile tracker (hand step + convergence), MVaR weights, bundles, credit, state."""

import pytest
import torch

from entrolab.advantages.riskpo import QuantileTracker, RiskPO, mvar_weights
from entrolab.registry import ADVANTAGES


def test_tracker_hand_steps():
    """Init from [0..4] at levels (.2, .8): linear quantiles .8 and 3.2. Updating with the same data:
    fraction below is exactly .2 and .8 ⇒ no move. With five 10s: below = 0 ⇒ q += .1·α ⇒ .82, 3.28."""
    t = QuantileTracker((0.2, 0.8), lr=0.1)
    x = torch.arange(5.0)
    t.update(x)
    assert torch.allclose(t.q, torch.tensor([0.8, 3.2], dtype=torch.float64))
    t.update(x)
    assert torch.allclose(t.q, torch.tensor([0.8, 3.2], dtype=torch.float64))
    t.update(torch.full((5,), 10.0))
    assert torch.allclose(t.q, torch.tensor([0.82, 3.28], dtype=torch.float64))


def test_tracker_converges_to_quantiles():
    """Brute-force check: SGD on pinball loss with uniform(0,1) draws settles near q = α."""
    gen = torch.Generator().manual_seed(0)
    t = QuantileTracker((0.2, 0.8), lr=0.02)
    t.init_from(torch.tensor([0.5, 0.5]))
    for _ in range(2000):
        t.update(torch.rand(64, generator=gen))
    assert torch.allclose(t.q.float(), torch.tensor([0.2, 0.8]), atol=0.03)


def test_mvar_weights_hand():
    """X=[0,1,2,3], q_d=1, q_u=2: g_R=[0,0,1,1], a_R=g/.6; a_C=−(1−X)^+/.2=[−5,0,0,0];
    a=(1.5·a_C + a_R)/2.5 = [−3, 0, 2/3, 2/3]."""
    a = mvar_weights(torch.tensor([0.0, 1, 2, 3]), 1.0, 2.0, a_d=0.2, a_u=0.8, omega=1.5)
    assert torch.allclose(a.float(), torch.tensor([-3.0, 0.0, 2 / 3, 2 / 3]), atol=1e-4)
    nb = mvar_weights(torch.tensor([1.5]), 1.0, 2.0, mixing=False, natural_baseline=True)
    assert float(nb) == pytest.approx((0.5 - 1.0) / 0.6, abs=1e-4)


def test_bundle_end_to_end_hand(make_batch):
    """Two prompts (one bundle), G=2: q0 r=[1,0], q1 r=[1,1] ⇒ papers X=[2,1]; batch quantiles of [1,2]:
    1.2 and 1.8. g_R=[.6, 0] ⇒ a_R=[1, 0]; a_C=[0, −1]; a=(1.5a_C + a_R)/2.5=[.4, −.6]. Uniform credit:
    rows (0, 2) get .4, rows (1, 3) get −.6."""
    b = make_batch([1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1])
    est = ADVANTAGES.build("riskpo", {"bundle_size": 2, "quantile_mode": "batch", "credit": "uniform",
                                      "norm_by_std": False})
    adv, m = est(b)
    assert torch.allclose(adv, torch.tensor([0.4, -0.6, 0.4, -0.6]), atol=1e-4)


def test_tracker_used_before_update_and_restored(make_batch):
    """track mode: call 1 uses quantiles initialised from batch 1; call 2 uses the tracker as it stood
    after batch 1 (the value is read before, and written after, each use); call 3 uses it as updated by
    batch 2. A restored copy reproduces call 2."""
    b1 = make_batch([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1, 2, 2])
    b2 = make_batch([0.0, 1.0, 1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1, 2, 2])
    est = RiskPO(bundle_size=3, quantile_mode="track", lr_q=0.5)
    _, m1 = est(b1)
    ref = QuantileTracker((0.2, 0.8), lr=0.5)
    ref.init_from(torch.tensor([2.0, 1.0]))  # papers of b1
    assert (m1["riskpo/q_down"], m1["riskpo/q_up"]) == pytest.approx(tuple(ref.q.tolist()))
    state = est.state_dict()
    adv2, m2 = est(b2)
    assert (m2["riskpo/q_down"], m2["riskpo/q_up"]) == pytest.approx(tuple(ref.q.tolist()))
    ref.update(torch.tensor([2.0, 2.0]))  # papers of b2
    _, m3 = est(b1)
    assert (m3["riskpo/q_down"], m3["riskpo/q_up"]) == pytest.approx(tuple(ref.q.tolist()))
    clone = RiskPO(bundle_size=3, quantile_mode="track", lr_q=0.5)
    clone.load_state_dict(state)
    assert torch.equal(clone(b2)[0], adv2)


def test_sum_mean_credit_is_clamped(make_batch):
    """Paper 0 deviations +.9 (q0: [1, −.8], mean .1) and −.8 (q1: [0, 1.6], mean .8): upstream weights
    .9/.1 = 9 and −8; ours clamp to ±1."""
    b = make_batch([1.0, -0.8, 0.0, 1.6], [0, 0, 1, 1])
    est = RiskPO(bundle_size=2, quantile_mode="batch", credit="sum_mean", norm_by_std=False)
    adv, _ = est(b)
    x = torch.tensor([1.0, 0.8])
    q = torch.quantile(x.double(), torch.tensor([0.2, 0.8], dtype=torch.float64))
    a = mvar_weights(x, float(q[0]), float(q[1]))
    assert adv[0].item() == pytest.approx(float(a[0]), abs=1e-5)
    assert adv[2].item() == pytest.approx(-float(a[0]), abs=1e-5)


def test_item6_tracker_one_step_per_rl_step_and_no_step_on_init(make_batch):
    """Upstream (RiskPO ray_trainer): the tracker is initialised on step 1 only, then takes ONE SGD step
    per RL step over all paper scores of the batch. bundle_size 2, four prompts, G = 2.

    Step 1: rewards p0 [1,0], p1 [1,1], p2 [0,0], p3 [1,0] ⇒ papers (p0,p1) X = [2, 1], (p2,p3) X = [1, 0].
    All scores sorted [0, 1, 1, 2]: linear quantiles at .2 (pos .6) = 0.6 and at .8 (pos 2.4) = 1.4.
    The tracker is left there (no step on its own initial batch).
    Step 2: p0 [0,0], p1 [0,0], p2 [1,1], p3 [1,1] ⇒ X = [0, 0] and [2, 2]; used quantiles (0.6, 1.4);
    one step over all four scores: below 0.6 = 2/4, below 1.4 = 2/4 ⇒ q_d = 0.6 + 0.5·(0.2 − 0.5) = 0.45,
    q_u = 1.4 + 0.5·(0.8 − 0.5) = 1.55. (One step per bundle, the old behaviour, gives q_d = 0.2 after
    the first bundle alone.)"""
    est = RiskPO(bundle_size=2, quantile_mode="track", lr_q=0.5)
    _, m1 = est(make_batch([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0], [0, 0, 1, 1, 2, 2, 3, 3]))
    assert (m1["riskpo/q_down"], m1["riskpo/q_up"]) == pytest.approx((0.6, 1.4))
    assert est.tracker.q.tolist() == pytest.approx([0.6, 1.4])
    _, m2 = est(make_batch([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], [0, 0, 1, 1, 2, 2, 3, 3]))
    assert (m2["riskpo/q_down"], m2["riskpo/q_up"]) == pytest.approx((0.6, 1.4))
    assert est.tracker.q.tolist() == pytest.approx([0.45, 1.55])
