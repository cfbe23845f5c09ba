"""Token-, answer- and phase-level entropy, and the entropy identities on a small softmax."""

import math

import pytest
import torch

from entrolab.diagnostics.discriminator import discriminator_stats, entropy_discriminator, expected_discriminator
from entrolab.diagnostics.entropy import answer_entropy, phase_entropy, quantile_summary, softmax_entropy, token_entropy_mean
from entrolab.diagnostics.mechanism import entropy_change_first_order


def test_token_entropy_is_a_mean_over_valid_tokens_only():
    """Valid entries 1, 2, 3 (the 100 is padding) -> mean 2."""
    ent = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert token_entropy_mean(ent, mask) == pytest.approx(2.0)
    assert math.isnan(token_entropy_mean(ent, torch.zeros_like(mask)))


def test_answer_entropy_hand_values():
    """{a: 2, b: 2} -> log 2; {a: 3, <none>: 1}: category -> −(¾ log ¾ + ¼ log ¼); drop -> 0."""
    assert answer_entropy({"a": 2, "b": 2}) == pytest.approx(math.log(2))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert answer_entropy({"a": 3, "<none>": 1}) == pytest.approx(h)
    assert answer_entropy({"a": 3, "<none>": 1}, unparsed="drop") == 0.0
    assert math.isnan(answer_entropy({}))
    with pytest.raises(ValueError, match="'category' or 'drop'"):
        answer_entropy({"a": 1}, unparsed="keep")


def test_phase_entropy_split():
    """[1, 3 | 5] with split 2 -> scratchpad 2, answer 5; split 0 -> empty scratchpad is NaN."""
    assert phase_entropy([1.0, 3.0, 5.0], 2) == (2.0, 5.0)
    think, ans = phase_entropy([1.0, 3.0], 0)
    assert math.isnan(think) and ans == 2.0
    with pytest.raises(ValueError, match="outside"):
        phase_entropy([1.0], 2)


def test_quantile_summary():
    s = quantile_summary([1.0, 2.0, 3.0, 4.0, 5.0, float("nan")])
    assert (s["count"], s["mean"], s["q50"], s["min"], s["max"]) == (5, 3.0, 3.0, 1.0, 5.0)
    assert s["std"] == pytest.approx(math.sqrt(2.0))


def test_softmax_entropy_uniform():
    assert float(softmax_entropy(torch.zeros(5))) == pytest.approx(math.log(5))


def test_first_order_entropy_identity_matches_finite_difference():
    """Entropy Mechanism §1.1: H(z + tΔz) − H(z) = −t·Cov_π(log π, Δz) + O(t²)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, generator=g, dtype=torch.float64)
    dz = torch.randn(6, generator=g, dtype=torch.float64)
    pred = float(entropy_change_first_order(z, dz))
    for t in (1e-3, 1e-4):
        measured = float(softmax_entropy(z + t * dz) - softmax_entropy(z))
        assert measured / t == pytest.approx(pred, rel=10 * t, abs=1e-9)


def test_natural_pg_entropy_change_is_minus_cov_logp_adv():
    """With Δz = η·A the prediction is −η·Cov(log π, A): hand-computed on π = (½, ¼, ¼), A = (1, 0, 0).

    log π = (−log 2, −2 log 2, −2 log 2); E[log π] = −1.5 log 2; E[A] = ½;
    Cov = Σ π (log π − E)(A − E[A]) = ½(0.5 log 2)(½) + 2·¼(−0.5 log 2)(−½) = 0.25 log 2.
    """
    z = torch.log(torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert float(entropy_change_first_order(z, torch.tensor([1.0, 0.0, 0.0]))) == pytest.approx(-0.25 * math.log(2))


def test_discriminator_single_logit_update():
    """Entropy Dynamics §7.1: raising logit k by ε changes H by −ε·S_k, S_k = p_k(H + log p_k)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(7, generator=g, dtype=torch.float64)
    logp = torch.log_softmax(z, -1)
    H = softmax_entropy(z)
    S = entropy_discriminator(logp, H.expand_as(logp))
    eps = 1e-5
    for k in range(7):
        e = torch.zeros(7, dtype=torch.float64)
        e[k] = eps
        dH = float(softmax_entropy(z + e) - softmax_entropy(z - e)) / (2 * eps)  # central difference
        assert dH == pytest.approx(-float(S[k]), rel=1e-6, abs=1e-9)


def test_grpo_step_entropy_change_uses_expected_discriminator():
    """Δz = ηA(e_k − π) gives ΔH ≈ −ηA(S_k − E_π[S]) (Entropy Dynamics §7.1)."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, generator=g, dtype=torch.float64)
    p = torch.softmax(z, -1)
    logp = torch.log_softmax(z, -1)
    S = entropy_discriminator(logp, softmax_entropy(z).expand_as(logp))
    k, step = 3, 1e-5
    dz = -p.clone()
    dz[k] += 1.0
    dH = float(softmax_entropy(z + step * dz) - softmax_entropy(z - step * dz)) / (2 * step)
    assert dH == pytest.approx(-float(S[k] - expected_discriminator(z)), rel=1e-6, abs=1e-9)
    # E_π[S] is the π-weighted mean of S.
    assert float(expected_discriminator(z)) == pytest.approx(float((p * S).sum()))


def test_discriminator_stats_hand_values():
    """S = (1, 2, 3, −10) valid, A = (1, −1, −1, −1). mean −1, std = sqrt(((2)²+3²+4²+9²)/4) = sqrt(27.5).

    mean S over A < 0 is (2 + 3 − 10)/3 = −5/3. Clip_B with μ = 0.5 drops A < 0 tokens with S − mean < −0.5·std ≈ −2.62: only S = −10 -> ¼.
    """
    S = torch.tensor([[1.0, 2.0], [3.0, -10.0]])
    A = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])
    out = discriminator_stats(S, A, torch.ones(2, 2, dtype=torch.bool), clip_b_mu=0.5)
    assert out["mean"] == pytest.approx(-1.0)
    assert out["std"] == pytest.approx(math.sqrt(27.5))
    assert out["frac_pos"] == 0.75
    assert out["mean_adv_pos"] == 1.0 and out["mean_adv_neg"] == pytest.approx(-5.0 / 3)
    assert out["clip_b_frac"] == 0.25
