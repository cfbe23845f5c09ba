"""Covariance, the measured-vs-predicted entropy change, the entropy–performance law, clipping
statistics and hidden-state effective rank."""

import math

import pytest
import torch

from entrolab.diagnostics.clipping import clip_stats
from entrolab.diagnostics.mechanism import fit_entropy_change, fit_entropy_performance_law, token_covariance
from entrolab.diagnostics.rank import effective_rank, effective_rank_dynamics, rank_over_run


def test_token_covariance_hand_values():
    """Valid ℓ = (−1, −2, −3), A = (1, 1, −2) (the padded 9s are ignored).

    mean ℓ = −2, mean A = 0: C = (1·1, 0·1, (−1)(−2)) = (1, 0, 2); mean C = 1 = population Cov.
    """
    logp = torch.tensor([[-1.0, -2.0], [-3.0, 9.0]])
    adv = torch.tensor([1.0, -2.0])  # per sequence, broadcast to tokens
    mask = torch.tensor([[True, True], [True, False]])
    C = token_covariance(logp, adv, mask)
    assert C.tolist() == [1.0, 0.0, 2.0]


def test_token_covariance_shape_error():
    with pytest.raises(ValueError, match="shapes differ"):
        token_covariance(torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))


def test_law_fit_recovers_exact_law_and_predicts_holdout():
    """R = −0.2·exp(H) + 0.9 exactly: the fit gives a = 0.2, b = 0.9, ceiling 0.7, zero errors."""
    H = [1.5, 1.3, 1.0, 0.8, 0.6, 0.4, 0.3]
    R = [-0.2 * math.exp(h) + 0.9 for h in H]
    fit = fit_entropy_performance_law(H, R, n_fit=3)
    assert (fit.a, fit.b, fit.ceiling) == pytest.approx((0.2, 0.9, 0.7))
    assert fit.rmse_fit == pytest.approx(0.0, abs=1e-12) and fit.rmse_holdout == pytest.approx(0.0, abs=1e-12)


def test_law_fit_holdout_error_hand_value():
    """Fit on x = e^H ∈ {1, e}: points R = (0, 1) give slope 1/(e−1) -> a = −1/(e−1), b = −1/(e−1).

    Held-out H = 0 (x = 1) with R = 0.5: prediction 0, error 0.5 -> RMSE 0.5.
    """
    fit = fit_entropy_performance_law([0.0, 1.0, 0.0], [0.0, 1.0, 0.5], n_fit=2)
    assert fit.a == pytest.approx(-1 / (math.e - 1)) and fit.b == pytest.approx(-1 / (math.e - 1))
    assert fit.rmse_holdout == pytest.approx(0.5)
    with pytest.raises(ValueError, match="constant"):
        fit_entropy_performance_law([1.0, 1.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="n_fit"):
        fit_entropy_performance_law([1.0, 2.0], [0.1, 0.2], n_fit=3)


def test_entropy_change_fit_recovers_eta():
    """ΔH = −0.5·Cov exactly: Cov = (1, 2, −1) -> H = (3, 2.5, 1.5, 2.0); η̂ = 0.5, corr 1, signs agree."""
    fit = fit_entropy_change([0, 1, 2, 3], [3.0, 2.5, 1.5, 2.0], [1.0, 2.0, -1.0, 0.0])
    assert fit.eta_hat == pytest.approx(0.5)
    assert fit.correlation == pytest.approx(1.0) and fit.sign_agreement == 1.0
    assert fit.measured_dH == [-0.5, -1.0, 0.5]


def test_clip_stats_hand_values():
    """Four tokens with ε = 0.2, c = 3:

    A=+1, r=1.5 -> upper clip; A=−1, r=0.5 -> lower clip; A=−1, r=4 -> dual clip; A=+1, r=1 -> none.
    Removed weights A·r·1[clipped] = (1.5, −0.5, −4, 0): bias_mean = −3/4, abs share 6/7.
    Surrogate gap A·r − J: (1.5 − 1.2, −0.5 + 0.8, −4 + 3, 0) = (0.3, 0.3, −1, 0) -> mean −0.1.
    """
    r = torch.tensor([[1.5, 0.5, 4.0, 1.0]])
    A = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    out = clip_stats(r.log(), torch.zeros_like(r), A, torch.ones_like(r, dtype=torch.bool))
    assert (out["clipfrac_high"], out["clipfrac_low"], out["clipfrac_dual"], out["clipfrac"]) == (0.25, 0.25, 0.25, 0.75)
    assert out["bias_mean"] == pytest.approx(-0.75)
    assert out["bias_abs_share"] == pytest.approx(6 / 7)
    assert out["surrogate_gap"] == pytest.approx(-0.1)
    no_dual = clip_stats(r.log(), torch.zeros_like(r), A, torch.ones_like(r, dtype=torch.bool), dual_clip_c=None)
    assert no_dual["clipfrac_dual"] == 0.0 and no_dual["clipfrac"] == 0.5


def test_clip_stats_on_policy_nothing_clipped():
    logp = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    out = clip_stats(logp, logp, torch.tensor([1.0, -1.0, 0.5]), torch.ones(3, 4, dtype=torch.bool))
    assert out["clipfrac"] == 0.0 and out["bias_mean"] == 0.0 and out["ratio_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dual_clip_c must be > 1"):
        clip_stats(logp, logp, torch.zeros(3), torch.ones(3, 4, dtype=torch.bool), dual_clip_c=0.5)


def test_effective_rank_known_spectra():
    """Centred rows spanning k orthogonal directions with equal singular values -> ER = k."""
    # ±e1, ±e2 rows: centred already, singular values (√2, √2, 0, ...) -> ER = 2.
    h = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    assert effective_rank(h) == pytest.approx(2.0)
    # Singular values (3, 1): p = (¾, ¼) -> ER = exp(−¾ log ¾ − ¼ log ¼).
    h2 = torch.tensor([[3.0, 0], [-3.0, 0], [0, 1.0], [0, -1.0]]) / math.sqrt(2)
    assert effective_rank(h2) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert effective_rank(torch.ones(5, 3)) == 1.0


def test_effective_rank_dynamics_against_direct_loop():
    """ERV/ERA equal the spec's definitions computed directly on prefixes (stride 2, T = 7).

    Checkpoints h[:t+1] at t = 2, 4, 6 (t < T), i.e. prefixes of 3, 5 and 7 rows (released code).
    """
    h = torch.randn(7, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ers = [effective_rank(h[:n]) for n in (3, 5, 7)]
    d = [ers[1] - ers[0], ers[2] - (ers[0] + ers[1]) / 2]
    out = effective_rank_dynamics(h, stride=2)
    assert out["erv"] == pytest.approx(sum(d) / 2)
    assert out["era"] == pytest.approx(d[1] - d[0])
    assert out["er"] == pytest.approx(effective_rank(h))
    # stride 3: checkpoints at t = 3, 6 -> prefixes 4 and 7; one increment, so ERA is undefined.
    two = effective_rank_dynamics(h, stride=3)
    assert two["erv"] == pytest.approx(effective_rank(h) - effective_rank(h[:4])) and math.isnan(two["era"])
    assert effective_rank_dynamics(h, stride=4) is None  # T = 7 < 2·4
    assert effective_rank_dynamics(h[:6], stride=3) is None  # t = 3 only: a single checkpoint
    # last max_len rows only: the window h[2:] with stride 2 has checkpoints at 3 and 5 rows.
    win = effective_rank_dynamics(h, stride=2, max_len=5)
    assert win["erv"] == pytest.approx(effective_rank(h[2:]) - effective_rank(h[2:5]))


def test_effective_rank_dynamics_is_the_advantage_bonus_function():
    """The effective_rank advantage (which logs rank/er, rank/erv, rank/era) imports this module's
    functions: one definition, so the diagnostic and the bonus cannot disagree."""
    import entrolab.advantages.effective_rank as adv

    assert adv.effective_rank is effective_rank and adv.effective_rank_dynamics is effective_rank_dynamics


def test_rank_over_run():
    rows = rank_over_run([0, 1, 2], [[1.0, 3.0], [], [2.0, float("nan")]])
    assert rows == [{"step": 0, "mean": 2.0, "std": 1.0, "count": 2}, {"step": 2, "mean": 2.0, "std": 0.0, "count": 1}]


def test_law_section_prefers_eval_accuracy_from_metrics():
    """Training lines carry policy/entropy; eval lines at the same steps carry eval/mean@n, which
    follows R = −0.1·exp(H) + 0.8 exactly, so the fit recovers a = 0.1, b = 0.8."""
    from entrolab.diagnostics.inputs import Dataset
    from entrolab.diagnostics.sections_steps import law_section

    H = [1.2, 1.0, 0.8, 0.6, 0.5]
    rows = [{"step": s, "policy/entropy": h, "reward/mean": 0.0} for s, h in enumerate(H)]
    rows += [{"step": s, "eval/mean@n": -0.1 * math.exp(h) + 0.8} for s, h in enumerate(H)]
    result, reason = law_section(Dataset(metrics={"run": rows}))
    assert reason is None
    fit = result["runs"]["run (metrics.jsonl, eval)"]["fit"]
    assert (fit["a"], fit["b"], fit["ceiling"]) == pytest.approx((0.1, 0.8, 0.7))
    assert law_section(Dataset())[0] is None
