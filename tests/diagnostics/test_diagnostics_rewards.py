"""Best-of-N vs KL, STARC distance, preference consistency and the policy cliff."""

import itertools
import math
from collections import Counter

import pytest
import torch

from entrolab.diagnostics.bon import (bon_distribution, bon_expected_reward, bon_kl_bound, bon_kl_exact, kl_divergence,
                                      tilted_at_kl, tilted_estimates)
from entrolab.diagnostics.cliff import near_optimal_set, policy_cliff, softmax_tv, total_variation, tv_noise_floor
from entrolab.diagnostics.preference import pairwise_preferences, preference_consistency
from entrolab.diagnostics.starc import pad_ragged, starc_distance, standardize


def brute_force_bon(p, r, N):
    """Enumerate all |Y|^N draws; the output is uniform over the drawn maximisers."""
    Y = len(p)
    out = [0.0] * Y
    for draw in itertools.product(range(Y), repeat=N):
        prob = math.prod(p[y] for y in draw)
        best = max(r[y] for y in draw)
        winners = [y for y in draw if r[y] == best]
        for y in winners:
            out[y] += prob / len(winners)
    return out


@pytest.mark.parametrize("r", [[0.0, 1.0, 1.0, 2.0], [0.3, 0.1, 0.7, 0.5], [1.0, 1.0, 1.0, 1.0]])
def test_bon_distribution_matches_enumeration(r):
    p = [0.1, 0.2, 0.3, 0.4]
    for N in (1, 2, 3):
        exact = bon_distribution(torch.tensor(p, dtype=torch.float64), torch.tensor(r), N)
        assert exact.tolist() == pytest.approx(brute_force_bon(p, r, N), abs=1e-12)


def test_bon_kl_bound_and_ties():
    """No ties on many equiprobable outcomes: exact KL -> log N − (N−1)/N; ties: strictly below."""
    assert bon_kl_bound(1) == 0.0 and bon_kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    Y = 4000
    p = torch.full((Y,), 1.0 / Y, dtype=torch.float64)
    r = torch.arange(Y, dtype=torch.float64)
    assert bon_kl_exact(p, r, 4) == pytest.approx(bon_kl_bound(4), abs=2e-3)
    tied = torch.tensor([0.0, 1.0, 1.0, 1.0])
    p4 = torch.full((4,), 0.25, dtype=torch.float64)
    # With 0/1 rewards BoN is Bernoulli(1 − ¼^N) on the levels: KL = KL(Bern(q) ‖ Bern(¾)).
    q = 1 - 0.25 ** 3
    want = q * math.log(q / 0.75) + (1 - q) * math.log((1 - q) / 0.25)
    assert bon_kl_exact(p4, tied, 3) == pytest.approx(want)
    assert want < bon_kl_bound(3)


def test_kl_divergence_infinite_off_support():
    assert kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])) == math.inf


def test_best_of_one_kl_is_exactly_zero_and_tilt_accepts_it():
    """Regression (seen on the policy-cliff eval: 64 samples, 15 correct): BoN with N = 1 is p itself,
    but the float sum Σ q log(q/p) came out as −6.8e-16 and tilted_at_kl refused the negative KL."""
    r = torch.tensor([1.0] * 15 + [0.0] * 49, dtype=torch.float64)
    p = torch.full_like(r, 1 / 64)
    kl = kl_divergence(bon_distribution(p, r, 1), p)
    assert kl == 0.0
    assert tilted_at_kl(r.tolist(), kl)["reward"] == pytest.approx(15 / 64)


def test_bon_expected_reward_matches_subset_enumeration():
    rewards = [0.3, 1.0, 0.0, 0.7, 0.7, 0.2]
    for n in range(1, 7):
        subsets = list(itertools.combinations(rewards, n))
        assert bon_expected_reward(rewards, n) == pytest.approx(sum(max(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError, match="1 <= n <= N = 6"):
        bon_expected_reward(rewards, 7)


def test_tilted_estimates_hand_values():
    """Samples r = (0, 1), λ = log 3: weights (1, 3)/4 -> reward ¾; KL = ¾ log 3 − log 2 (= KL((¼,¾)‖(½,½)))."""
    out = tilted_estimates([0.0, 1.0], math.log(3))
    assert out["reward"] == pytest.approx(0.75)
    assert out["kl"] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert out["ess"] == pytest.approx(1 / (1 / 16 + 9 / 16))
    assert tilted_estimates([0.0, 1.0], 0.0) == {"reward": 0.5, "kl": 0.0, "ess": 2.0}


def test_tilted_at_kl_hits_target_and_caps():
    rewards = [0.0, 0.2, 0.5, 1.0, 1.0]
    t = tilted_at_kl(rewards, 0.3)
    assert t["kl"] == pytest.approx(0.3, abs=1e-7) and t["capped"] == 0.0
    cap = tilted_at_kl(rewards, 5.0)
    assert cap["capped"] == 1.0 and cap["reward"] == 1.0 and cap["kl"] == pytest.approx(math.log(5 / 2))


def test_binary_reward_bon_is_the_tilt():
    """With 0/1 rewards BoN only reweights the two levels, so it is the tilt with the same KL."""
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0]
    r = torch.tensor(rewards, dtype=torch.float64)
    p = torch.full_like(r, 0.2)
    for N in (2, 4):
        q = bon_distribution(p, r, N)
        t = tilted_at_kl(rewards, kl_divergence(q, p))
        assert t["reward"] == pytest.approx(float((q * r).sum()), abs=1e-7)


def test_starc_zero_for_shaping_and_positive_scaling():
    g = torch.Generator().manual_seed(0)
    R1 = torch.randn(4, 6, generator=g, dtype=torch.float64)
    phi = torch.randn(4, 1, generator=g, dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    assert starc_distance(R1, 3.0 * R1 + phi, mask) == pytest.approx(0.0, abs=1e-12)
    assert starc_distance(R1, -R1, mask) == pytest.approx(2.0)
    R2 = torch.randn(4, 6, generator=g, dtype=torch.float64)
    assert 0.0 < starc_distance(R1, R2, mask) <= 2.0
    # Non-uniform canonicalisation and coverage weights keep the invariance.
    w = torch.rand(4, 6, generator=g, dtype=torch.float64)
    assert starc_distance(R1, 0.5 * R1 - 7, mask, response_weights_PY=w, coverage_PY=w) == pytest.approx(0.0, abs=1e-12)


def test_starc_constant_reward_standardises_to_zero():
    """A per-prompt constant is pure shaping: s = 0, so its distance to any non-constant reward is 1."""
    R, mask = pad_ragged([[1.0, 1.0, 1.0], [5.0, 5.0]])
    assert standardize(R, mask).abs().max() == 0.0
    other, _ = pad_ragged([[0.0, 1.0, 2.0], [1.0, 0.0]])
    assert starc_distance(R, other, mask) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reward shapes differ"):
        starc_distance(R, torch.zeros(3, 3))


def test_condorcet_cycle():
    """Three voters ranking a≻b≻c, b≻c≻a, c≻a≻b: every pair has p = ⅔, the majority is a cycle."""
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]])
    out = preference_consistency(scores)
    assert out["cycle_rate"] == 1.0 and out["cycles"] == 1 and out["decisive_triangles"] == 1
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert out["disagreement_entropy_bits"] == pytest.approx(h)
    assert out["uncertain_frac"] == 1.0


def test_unanimous_and_tied_preferences():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    out = preference_consistency(scores)
    assert out["cycle_rate"] == 0.0 and out["disagreement_entropy_bits"] == 0.0 and out["decisive_triangles"] == 4
    P = pairwise_preferences(torch.tensor([[1.0, 1.0]]))
    assert P.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert math.isnan(preference_consistency(torch.tensor([[1.0, 1.0, 1.0]]))["cycle_rate"])


def test_cycle_count_matches_brute_force():
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 4, (5, 9), generator=g).double()
    P = pairwise_preferences(scores)
    cycles = triangles = 0
    for i, j, k in itertools.combinations(range(9), 3):
        pairs = [(i, j), (j, k), (i, k)]
        if any(P[a, b] == 0.5 for a, b in pairs):
            continue
        triangles += 1
        w = lambda a, b: P[a, b] > 0.5  # noqa: E731
        cycles += (w(i, j) and w(j, k) and w(k, i)) or (w(j, i) and w(k, j) and w(i, k))
    out = preference_consistency(scores)
    assert (out["cycles"], out["decisive_triangles"]) == (cycles, triangles)


def test_total_variation_and_near_optimal_set():
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 1.0}) == 0.5
    assert near_optimal_set({"a": 1.0, "b": 1.0, "c": 0.0}) == {"size": 2, "top2_gap": 0.0}
    assert near_optimal_set({"a": 1.0, "b": 0.9}, tol=0.05) == {"size": 1, "top2_gap": pytest.approx(0.1)}


def test_policy_cliff_tv_per_delta():
    """Prompt 1: (a 4, b 0) vs (a 0, b 4): TV 1; prompt 2: identical: TV 0 -> mean ½, per δ = 0.1: 5."""
    ref = {"1": Counter(a=4), "2": Counter(a=2, b=2)}
    per = {"1": Counter(b=4), "2": Counter(a=1, b=1)}
    rewards = {"1": {"a": 1.0, "b": 1.0}, "2": {"a": 1.0, "b": 0.0}}
    out = policy_cliff(ref, per, delta=0.1, rewards=rewards)
    assert out["tv_mean"] == 0.5 and out["tv_max"] == 1.0 and out["tv_per_delta"] == pytest.approx(5.0)
    assert out["near_optimal_size_mean"] == 1.5
    with pytest.raises(ValueError, match="delta must be > 0"):
        policy_cliff(ref, per, delta=0.0)


def test_softmax_policy_is_lipschitz_in_the_reward():
    """Entropy-regularised policies: TV(softmax(r/τ), softmax((r+δ)/τ)) ≤ (max δ − min δ)/(4τ)."""
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        r = torch.randn(6, generator=g)
        d = 0.1 * torch.randn(6, generator=g)
        for tau in (0.05, 0.5, 2.0):
            assert softmax_tv(r, d, tau=tau) <= float(d.max() - d.min()) / (4 * tau) + 1e-12


def _exact_floor(p, n_a, n_b):
    """Brute force: E TV between two independent multinomial samples (sizes n_a, n_b) of p."""
    import itertools
    from math import factorial, prod

    def outcomes(n):
        for c in itertools.product(range(n + 1), repeat=len(p)):
            if sum(c) == n:
                yield c, factorial(n) / prod(factorial(k) for k in c) * prod(q ** k for q, k in zip(p, c))

    return sum(pa * pb * 0.5 * sum(abs(x / n_a - y / n_b) for x, y in zip(ca, cb))
               for ca, pa in outcomes(n_a) for cb, pb in outcomes(n_b))


def test_item7_tv_noise_floor_hand_values_and_brute_force():
    """Two finite samples of ONE distribution have TV > 0. One answer: 0. Two equally likely answers:
    n = 1 a side ⇒ TV ∈ {0, 1} with probability ½ each ⇒ ½; n = 2 a side ⇒ E|k1 − k2|/2 with
    k ~ Bin(2, ½) ⇒ (½·1 + ⅛·2)/2 = 3/8. Three answers (pooled counts 3:1:1) with samples of 2 and 3:
    the brute-force enumeration of every pair of outcomes. Bootstrap error ≤ 0.5/√20000 ≈ 0.0035."""
    assert tv_noise_floor({"a": 5}, {"a": 3}) == 0.0
    assert tv_noise_floor({"a": 1}, {"b": 1}, draws=20000) == pytest.approx(0.5, abs=0.015)
    assert tv_noise_floor({"a": 2}, {"b": 2}, draws=20000) == pytest.approx(3 / 8, abs=0.015)
    got = tv_noise_floor({"a": 1, "b": 1}, {"a": 2, "c": 1}, draws=20000, seed=3)
    assert got == pytest.approx(_exact_floor([3 / 5, 1 / 5, 1 / 5], 2, 3), abs=0.015)
    assert tv_noise_floor({"a": 1}, {"b": 1}, draws=50, seed=7) == tv_noise_floor({"a": 1}, {"b": 1}, draws=50, seed=7)
    with pytest.raises(ValueError, match="integer counts"):
        tv_noise_floor({"a": 0.5}, {"b": 1})


def test_item7_policy_cliff_reports_the_floor_and_the_excess():
    """200 prompts, both runs drawn from the SAME answer distribution (0.5, 0.3, 0.2), 64 samples each:
    the measured TV is pure sampling noise, so it matches the floor (excess ≈ 0) although it is far
    from 0. Runs drawn from (0.5, 0.3, 0.2) vs (0.2, 0.3, 0.5) (true TV 0.3): the excess over the floor
    is clearly positive. Non-integer weights give no floor (None)."""
    g = torch.Generator().manual_seed(0)

    def draw(p):
        k = torch.multinomial(torch.tensor(p), 64, replacement=True, generator=g)
        return {a: int((k == i).sum()) for i, a in enumerate("xyz") if int((k == i).sum())}

    ref = {str(i): draw([0.5, 0.3, 0.2]) for i in range(200)}
    same = policy_cliff(ref, {str(i): draw([0.5, 0.3, 0.2]) for i in range(200)}, delta=0.1)
    assert same["tv_mean"] > 0.08 and abs(same["tv_above_floor"]) < 0.01
    assert same["tv_floor_mean"] == pytest.approx(same["tv_mean"], abs=0.01)
    diff = policy_cliff(ref, {str(i): draw([0.2, 0.3, 0.5]) for i in range(200)}, delta=0.1)
    assert diff["tv_above_floor"] > 0.15
    weights = policy_cliff({"1": {"a": 0.5, "b": 0.5}}, {"1": {"a": 1.0}}, delta=0.1)
    assert weights["tv_floor_mean"] is None and weights["tv_above_floor"] is None
