"""The policy-cliff reward perturbation δ·u(prompt id, canonical answer): hand values, stability, δ = 0."""

import os
import subprocess
import sys

import pytest
import torch

from entrolab.registry import REWARDS, ConfigError
from entrolab.rewards.compose import compute_rewards
from entrolab.rewards.perturb import perturbation, perturbation_unit
from entrolab.rewards.verifier import VerifierReward

# Hand-derived with coreutils, independently of Python: printf '%s' KEY | b2sum -l 64
#   KEY [0,"p0","1+2"]     -> cd882066925fe936 -> k = 0xcd882066925fe936 >> 11 = 7231505370860541
#   KEY [0,"p0","<none>"]  -> 47ff08a61cea053d -> k = 2533141994773824
#   KEY [1,"p0","1+2"]     -> 10e7d34a0e9145dc -> k = 594811786744360
# u = 2k / 2^53 − 1 (bc, 20 digits): 0.60571675308597083819, −0.43752948655144052737, −0.86792525180759660942.
U_P0_12 = 0.60571675308597083819
U_P0_NONE = -0.43752948655144052737
U_P0_12_SEED1 = -0.86792525180759660942


def test_unit_hand_values():
    assert perturbation_unit("p0", "1+2", seed=0) == pytest.approx(U_P0_12, abs=1e-15)
    assert perturbation_unit("p0", "1+2", seed=0) == 2 * 7231505370860541 / 2**53 - 1  # exact in float64
    assert perturbation_unit("p0", None, seed=0) == pytest.approx(U_P0_NONE, abs=1e-15)
    assert perturbation_unit("p0", "<none>", seed=0) == perturbation_unit("p0", None, seed=0)
    assert perturbation_unit("p0", "1+2", seed=1) == pytest.approx(U_P0_12_SEED1, abs=1e-15)


def test_unit_keeps_fields_apart_and_covers_the_range():
    """('ab', 'c') and ('a', 'bc') are different keys; 2000 keys fill [−1, 1) with mean ≈ 0.

    A uniform on [−1, 1) has std 1/√3 ≈ 0.577, so the mean of 2000 draws has std ≈ 0.013: |mean| < 0.06
    fails only on a biased mapping (e.g. u in [0, 1)).
    """
    assert perturbation_unit("ab", "c") != perturbation_unit("a", "bc")
    u = [perturbation_unit(f"p{i}", str(i % 7)) for i in range(2000)]
    assert all(-1.0 <= x < 1.0 for x in u)
    assert min(u) < -0.99 and max(u) > 0.99 and abs(sum(u) / len(u)) < 0.06


def test_stable_across_calls_and_processes():
    """Python's str hash is salted per process; ours must not be: two interpreters with different
    PYTHONHASHSEED give the same value as this process (and as the pinned hand value)."""
    first = perturbation_unit("p0", "1+2")
    assert all(perturbation_unit("p0", "1+2") == first for _ in range(3))
    code = "from entrolab.rewards.perturb import perturbation_unit as u; print(repr(u('p0', '1+2')))"
    for hash_seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert float(out.stdout.strip()) == first


def test_registered_term_on_a_batch(make_batch):
    """Prompts p0 (rows 0, 1) and p1 (rows 2, 3); rows 0 and 1 share answer '1+2', so equal shifts.

    Expected: rows 0, 1 -> 0.1·U_P0_12; row 2 (p1, unparsed) -> 0.1·u('p1', None); row 3 differs.
    """
    b = make_batch([1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1], answers=["1+2", "1+2", None, "7"])
    term = REWARDS.build("perturbed", {"delta": 0.1, "seed": 0})
    values, metrics = term(b, None)
    assert values.dtype == torch.float32 and values.shape == (4,)
    v = values.tolist()
    assert v[0] == v[1] == pytest.approx(0.1 * U_P0_12, rel=1e-6)
    assert v[2] == pytest.approx(0.1 * perturbation_unit("p1", None), rel=1e-6)
    assert v[3] != v[2]
    assert metrics["reward/perturbed_abs_mean"] == pytest.approx(float(values.abs().mean()))
    assert b.extras["reward_delta"] == 0.1  # recorded for the rollout dump (diagnostics)
    assert torch.equal(values, perturbation(["p0", "p0", "p1", "p1"], ["1+2", "1+2", None, "7"], delta=0.1))
    assert torch.equal(REWARDS.build("perturbed", {"delta": -0.1})(b, None)[0], -values)


def test_delta_zero_is_exactly_the_unperturbed_reward(make_batch):
    """verifier + perturbed(δ = 0) equals verifier alone bit for bit (0·u adds nothing), and a
    perturbed run's reward differs from it by exactly the term."""
    rewards = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    mk = lambda: make_batch(rewards, [0, 0, 0, 1, 1, 1], answers=["a", "b", "a", None, "c", "d"])  # noqa: E731
    plain, _ = compute_rewards(mk(), None, [("verifier", 1.0, VerifierReward())])
    zero, _ = compute_rewards(mk(), None, [("verifier", 1.0, VerifierReward()),
                                           ("perturbed", 1.0, REWARDS.build("perturbed", {"delta": 0.0}))])
    assert torch.equal(zero, plain) and torch.equal(plain, torch.tensor(rewards))
    batch = mk()
    pert, _ = compute_rewards(batch, None, [("verifier", 1.0, VerifierReward()),
                                            ("perturbed", 1.0, REWARDS.build("perturbed", {"delta": 0.01}))])
    assert torch.allclose(pert - plain, batch.reward_terms["perturbed"], atol=1e-6)
    assert 0 < float((pert - plain).abs().max()) <= 0.01


def test_bad_delta_is_refused():
    # the registry's annotation check names the key before the component's own check runs
    with pytest.raises(ConfigError, match=r"rewards.terms.1.delta: expected float \(finite\), got nan"):
        REWARDS.build("perturbed", {"delta": float("nan")}, where="rewards.terms.1")
    with pytest.raises(ValueError, match="2 prompt ids for 1 answers"):
        perturbation(["p0", "p1"], ["a"])
