"""ARES HWE shaper: the state updates the original tests leave open (issue 9, "Branches no test checks").

The dual step on α_d (its sign for the hard bucket), the dynamic-KL β_d step (its sign) and the
"second-chance" relax bucket. Every test fixes the shaper's state with ``load_state_dict`` so the
trigger counts are known by hand: with ``window = 1`` the forward window mean at position i is
h_{i+1}, so a response with entropies ``[0, x]`` has one window, ē = x; with τ = 0.5 it has
N = 1 trigger if x ≥ 0.5 and soft cost (x − 0.5)^+.
"""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.rewards  # noqa: F401  (registers the shapers)
from entrolab.registry import SHAPERS
from entrolab.rewards.ares import bucket_of, forward_window_means, hierarchical_entropy_reward


def _batch(make_batch, groups, *, ref_logp: float | None = None):
    """``groups``: per prompt, a list of (correct, entropy row). Rewards are 1/0 from correctness."""
    rows, gid, correct = [], [], []
    for g, members in enumerate(groups):
        for ok, row in members:
            rows.append(row), gid.append(g), correct.append(ok)
    T = max(len(r) for r in rows)
    ent = torch.zeros(len(rows), T)
    for i, r in enumerate(rows):
        ent[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    lengths = [len(r) for r in rows]
    b = make_batch([float(c) for c in correct], gid, lengths=lengths, T=T, texts=["x" * (n - 1) for n in lengths],
                   entropy_BT=ent, correct=correct)
    if ref_logp is not None:
        b.ref_logp_BT = torch.full((len(rows), T), ref_logp)  # old_logp_BT is 0: δ = old − ref = −ref_logp
    return b


def _shaper(state_overrides=None, **kw):
    sh = SHAPERS.build("ares_hwe", {"window": 1, **kw})
    state = sh.state_dict()
    state.update({"tau": 0.5, **(state_overrides or {})})
    sh.load_state_dict(state)
    return sh


def _triggers(n: int) -> list[float]:
    """An entropy row with exactly n triggers (windows at 1.0 ≥ τ) and 4 − n below τ (at 0)."""
    return [0.0] + [1.0] * n + [0.0] * (4 - n)


def test_item_ares_alpha_dual_step_signs(make_batch):
    """Targets N* = {easy 1, medium 2, hard 4}, α = 0.5, lr 0.05.
    easy (3/3 correct), N = 3 each: δ = N̄ − N* = +2 ⇒ α = 0.6 (too many triggers: weigh the penalty more);
    medium (1/2 correct), N = 1: δ = 1 − 2 = −1 ⇒ α = 0.45;
    hard (0/2 correct), N = 2: δ = N* − N̄ = +2 ⇒ α = 0.6 (too few triggers on hard prompts: weigh the
    bonus more); the hard sign is reversed relative to easy/medium.
    Targets then move to 0.9·N* + 0.1·N̄ = {1.2, 1.9, 3.8}.
    Bonuses use the old α and rounded N*: easy ✓ N=3, N*=1: Δ=2, m=1, Huber(1, 2)=0.25 ⇒ −0.5·0.25/3;
    medium ✓ N=1, N*=2: (|Δ|−m)^+ = 0 ⇒ 0; medium ✗: 0.8·0.5·σ(0) = 0.2;
    hard ✗ N=2, N*=4: Δ−m < 0 ⇒ 1.0·(0.5·1.2)·σ(0) = 0.3."""
    groups = [[(True, _triggers(3))] * 3, [(True, _triggers(1)), (False, _triggers(1))], [(False, _triggers(2))] * 2]
    b = _batch(make_batch, groups)
    sh = _shaper({"target": {"easy": 1.0, "medium": 2.0, "hard": 4.0}})
    out, m = sh(b.rewards_B, b, None)
    assert sh.alpha == pytest.approx({"easy": 0.6, "medium": 0.45, "hard": 0.6})
    assert sh.target == pytest.approx({"easy": 1.2, "medium": 1.9, "hard": 3.8})
    assert (m["ares/alpha_easy"], m["ares/alpha_medium"], m["ares/alpha_hard"]) == pytest.approx((0.6, 0.45, 0.6))
    bonus = [-0.5 * 0.25 / 3] * 3 + [0.0, 0.2] + [0.3, 0.3]
    assert (out - b.rewards_B).tolist() == pytest.approx(bonus, abs=1e-6)
    assert m["ares/bonus"] == pytest.approx(sum(bonus) / 7, abs=1e-6)
    assert m["ares/hwe_mean"] == pytest.approx((3 * 3 + 1 + 1 + 2 + 2) / 7)
    assert (m["ares/frac_easy"], m["ares/frac_medium"], m["ares/frac_hard"]) == pytest.approx((3 / 7, 2 / 7, 2 / 7))


def test_ares_alpha_clipped_to_0_2(make_batch):
    """Same batch, lr 1: α would be 0.5 + 2 (easy, hard) and 0.5 − 1 (medium): clipped to 2, 0, 2."""
    groups = [[(True, _triggers(3))] * 3, [(True, _triggers(1)), (False, _triggers(1))], [(False, _triggers(2))] * 2]
    b = _batch(make_batch, groups)
    sh = _shaper({"target": {"easy": 1.0, "medium": 2.0, "hard": 4.0}}, alpha_lr=1.0)
    sh(b.rewards_B, b, None)
    assert sh.alpha == {"easy": 2.0, "medium": 0.0, "hard": 2.0}


# The relax batch: soft cost = (x − 0.5)^+ for a row [0, x].
RELAX_GROUPS = [
    # easy (2/3 correct): the incorrect one has soft cost exactly 0.5 ⇒ relaxed
    [(True, [0.0, 3.0]), (True, [0.0, 0.0]), (False, [0.0, 1.0])],
    # easy: the incorrect one has soft cost 0.25 < 0.5 ⇒ not relaxed
    [(True, [0.0, 3.0]), (True, [0.0, 3.0]), (False, [0.0, 0.75])],
    # hard (0/2) and medium (1/2): incorrect with soft cost 2.5, but not easy ⇒ not relaxed
    [(False, [0.0, 3.0]), (False, [0.0, 3.0])],
    [(True, [0.0, 3.0]), (False, [0.0, 3.0])],
]
RELAX_PATTERN = [1.0, 1.0, 0.67, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_item_ares_relax_bucket_only_easy_incorrect_with_soft_cost(make_batch):
    """KL weight β_d·relax: relax = 0.67 only for an easy, incorrect sample with soft cost ≥ 0.5 (here
    exactly 0.5); correct easy samples, an easy incorrect one at 0.25, and hard/medium incorrect ones at
    2.5 keep weight β_d = 1 (the initial β)."""
    b = _batch(make_batch, RELAX_GROUPS, ref_logp=0.0)
    _shaper(dynamic_kl=True)(b.rewards_B, b, None)
    assert b.extras["kl_weight_B"].tolist() == pytest.approx(RELAX_PATTERN)


@pytest.mark.parametrize(("ref_logp", "log_beta"), [
    # δ = 1: k3 = e^−1 − 1 + 1 = 0.3679, err = 0.3679/0.01 − 1 = 35.8, err EMA 0.03·35.8 = 1.07 → clipped 0.2
    (-1.0, 0.05 * 0.2),
    # δ = 0: k3 = 0, err = −1, err EMA −0.03 ⇒ log β = 0.05·(−0.03)
    (0.0, 0.05 * -0.03),
])
def test_item_ares_dynamic_kl_beta_step_sign(make_batch, ref_logp, log_beta):
    """β_d rises when the bucket's KL is above the target and falls when below: log β += 0.05·clip(ē, ±0.2).
    The new β is used (and logged) from the next batch on, times the relax pattern."""
    b = _batch(make_batch, RELAX_GROUPS, ref_logp=ref_logp)
    sh = _shaper(dynamic_kl=True)  # default kl_target 0.01
    _, m1 = sh(b.rewards_B, b, None)
    assert m1["ares/kl_beta_easy"] == 1.0
    state = sh.state_dict()
    assert state["kl"]["log_beta"] == pytest.approx({d: log_beta for d in ("easy", "medium", "hard")})
    sh.load_state_dict({**state, "tau": 0.5})  # τ moved toward the batch's P95: put it back for the soft costs
    _, m2 = sh(b.rewards_B, b, None)
    assert [m2[f"ares/kl_beta_{d}"] for d in ("easy", "medium", "hard")] == pytest.approx([math.exp(log_beta)] * 3)
    assert b.extras["kl_weight_B"].tolist() == pytest.approx([math.exp(log_beta) * r for r in RELAX_PATTERN])


def test_ares_dynamic_kl_update_every_and_dead_zone(make_batch):
    """kl_update_every = 2 at KL = 0 (err = −1): no step after call 1; after call 2 the error EMA is
    0.97·(−0.03) − 0.03 = −0.0591 ⇒ log β = −0.002955. A KL within 2 % of the target (err = 0.01) is in
    the dead zone: β stays 1."""
    b = _batch(make_batch, RELAX_GROUPS, ref_logp=0.0)
    sh = _shaper(dynamic_kl=True, kl_update_every=2)
    sh(b.rewards_B, b, None)
    assert sh.state_dict()["kl"]["log_beta"]["easy"] == 0.0
    sh(b.rewards_B, b, None)
    assert sh.state_dict()["kl"]["log_beta"]["easy"] == pytest.approx(0.05 * -0.0591)
    assert sh.state_dict()["kl"]["calls"] == 2
    b2 = _batch(make_batch, RELAX_GROUPS, ref_logp=-1.0)
    dead = _shaper(dynamic_kl=True, kl_target=(math.exp(-1.0) / 1.01))  # k3(δ=1) = e^−1
    dead(b2.rewards_B, b2, None)
    assert dead.state_dict()["kl"]["log_beta"] == {"easy": 0.0, "medium": 0.0, "hard": 0.0}


def test_ares_bucket_target_is_mean_over_prompts(make_batch):
    """Two easy prompts with N = 2 and N = 4: the bucket mean is (2 + 4)/2 = 3 ⇒ α_easy = 0.5 + 0.05·(3 − 1)
    = 0.6 and the target moves to 0.9·1 + 0.1·3 = 1.2. A trigger exactly at τ counts (ē ≥ τ): the row
    [0, 0.5, 0.5, 0, 0] has N = 2."""
    groups = [[(True, [0.0, 0.5, 0.5, 0.0, 0.0])] * 2, [(True, _triggers(4))] * 2]
    b = _batch(make_batch, groups)
    sh = _shaper({"target": {"easy": 1.0}})
    sh(b.rewards_B, b, None)
    assert sh.alpha["easy"] == pytest.approx(0.6) and sh.target["easy"] == pytest.approx(1.2)


def test_ares_lexicon_triggers_through_the_shaper(make_batch):
    """Lexicon {actually, so}, window 3, text "actually so" (char tokens + EOS: 12 tokens, 9 windows), all
    entropies 1 ⇒ every window mean is 1 ≥ τ. Candidates are the word starts: "actually" at token 0
    (the first token starts at character 0) and "so" at token 9, which has no 3 following tokens (9 is
    not < 9 windows) ⇒ N = 1, not the 9 windows without a lexicon."""
    text = "actually so"
    b = make_batch([1.0], [0], lengths=[12], T=12, texts=[text], entropy_BT=torch.ones(1, 12), correct=[True])
    _, m = _shaper(window=3, lexicon=["actually", "so"])(b.rewards_B, b, None)
    assert m["ares/hwe_mean"] == 1.0
    _, m_all = _shaper(window=3)(b.rewards_B, b, None)
    assert m_all["ares/hwe_mean"] == 9.0


def test_ares_short_responses_and_single_sample(make_batch):
    """No response longer than the window: no window means, τ starts at 0, no triggers. One sample: the
    batch means are that sample's values."""
    b = make_batch([1.0], [0], lengths=[3], T=3, texts=["ab"], entropy_BT=torch.ones(1, 3), correct=[True])
    sh = SHAPERS.build("ares_hwe")  # window 4 by default
    _, m = sh(b.rewards_B, b, None)
    assert m["ares/tau"] == 0.0 and m["ares/hwe_mean"] == 0.0
    b = _batch(make_batch, [[(False, _triggers(3))]])
    _, m = _shaper({"target": {"hard": 1.0}})(b.rewards_B, b, None)
    # hard ✗, N = 3, N* = 1: Δ − m = 2 − 1 = 1 ⇒ e = 1.0·0.6·σ(1/3)
    assert m["ares/hwe_mean"] == 3.0 and m["ares/frac_hard"] == 1.0
    assert m["ares/bonus"] == pytest.approx(0.6 / (1 + math.exp(-1 / 3)), abs=1e-6)


def test_ares_kl_error_clip_and_beta_bounds(make_batch):
    """KL = 0 for 8 calls: the error EMA is −(1 − 0.97^k) and is clipped at −0.2 from k = 8 on
    (1 − 0.97^8 = 0.2163), so log β = 0.05·Σ_k max(−0.2, −(1 − 0.97^k)). β stays in [1e-4, 1e2]."""
    b = _batch(make_batch, RELAX_GROUPS, ref_logp=0.0)
    sh = _shaper(dynamic_kl=True)
    for _ in range(8):
        sh(b.rewards_B, b, None)
    expected = 0.05 * sum(max(-0.2, -(1 - 0.97 ** k)) for k in range(1, 9))
    assert sh.state_dict()["kl"]["log_beta"]["easy"] == pytest.approx(expected)
    low = _shaper({"kl": {"log_beta": {d: math.log(1e-4) + 0.001 for d in ("easy", "medium", "hard")},
                          "kl_ema": {}, "err_ema": {d: -0.2 for d in ("easy", "medium", "hard")}, "calls": 0}},
                  dynamic_kl=True)
    low(b.rewards_B, b, None)  # step 0.05·(−0.2) = −0.01 would go below 1e-4
    assert low.state_dict()["kl"]["log_beta"]["easy"] == pytest.approx(math.log(1e-4))
    b_hi = _batch(make_batch, RELAX_GROUPS, ref_logp=-1.0)
    high = _shaper({"kl": {"log_beta": {d: math.log(1e2) - 0.001 for d in ("easy", "medium", "hard")},
                           "kl_ema": {}, "err_ema": {d: 0.2 for d in ("easy", "medium", "hard")}, "calls": 0}},
                   dynamic_kl=True)
    high(b_hi.rewards_B, b_hi, None)  # +0.01 would go above 1e2
    assert high.state_dict()["kl"]["log_beta"]["easy"] == pytest.approx(math.log(1e2))


def test_ares_hierarchical_reward_branches():
    """α = 0.5. easy ✓ at the target (Δ = 0 ≤ m): no penalty. easy ✗ with Δ − m = 5: 0.6·0.5·σ(5/2).
    hard ✓ exactly at Δ = −m (N* = 2 ⇒ m = max(1, 0.7) = 1, N = 1): the bonus side, 0.6·σ(0) = 0.3.
    Group accuracy 0.3 is hard (< 1/3)."""
    e = hierarchical_entropy_reward
    assert e(4, 4, "easy", True, alpha=0.5) == 0.0
    assert e(10, 4, "easy", False, alpha=0.5) == pytest.approx(0.3 / (1 + math.exp(-2.5)))
    assert e(1, 2, "hard", True, alpha=0.5) == pytest.approx(0.3)
    assert bucket_of(0.3) == "hard"
    assert forward_window_means(torch.arange(1.0, 7.0)).tolist() == [3.5, 4.5]  # default window 4


def test_ares_defaults_and_validation():
    sh = SHAPERS.build("ares_hwe")
    assert sh.window == 4 and sh.requires == frozenset({"old_stats"})
    for kw, msg in [({"window": 0}, "window must be >= 1, got 0"),
                    ({"tau_decay": 1.0}, r": tau_decay and target_decay must be in \[0, 1\)$"),
                    ({"target_decay": 1.0}, r"tau_decay and target_decay must be in \[0, 1\)"),
                    ({"tau_decay": 1.5}, "tau_decay"), ({"target_decay": 1.5}, "target_decay"),
                    ({"kl_target": 0.0}, ": kl_target must be > 0 and kl_update_every >= 1$"),
                    ({"kl_update_every": 0}, "kl_target must be > 0")]:
        with pytest.raises(ValueError, match=msg):
            SHAPERS.build("ares_hwe", kw)
    SHAPERS.build("ares_hwe", {"tau_decay": 0.0, "target_decay": 0.0})


def test_ares_lexicon_word_at_text_start_is_token_0(make_batch):
    """The first token starts at character 0: "actually" at the start is window 0. Entropies
    [0, 1, 1, 1, 0, …] with window 3 and τ = 0.8: ē_0 = 1 triggers, ē_1 = 2/3 does not ⇒ N = 1."""
    ent = torch.zeros(1, 12)
    ent[0, 1:4] = 1.0
    b = make_batch([1.0], [0], lengths=[12], T=12, texts=["actually so"], entropy_BT=ent, correct=[True])
    _, m = _shaper({"tau": 0.8}, window=3, lexicon=["actually"])(b.rewards_B, b, None)
    assert m["ares/hwe_mean"] == 1.0


def test_ares_missing_inputs_messages(make_batch):
    b = _batch(make_batch, RELAX_GROUPS)
    b.entropy_BT = None
    with pytest.raises(ValueError, match=r"^ares_hwe needs batch.entropy_BT \(behaviour-policy token entropies\)$"):
        _shaper()(b.rewards_B, b, None)
    b = _batch(make_batch, RELAX_GROUPS)  # no ref_logp_BT
    with pytest.raises(ValueError, match="^ares_hwe with dynamic_kl needs batch.old_logp_BT and batch.ref_logp_BT$"):
        _shaper(dynamic_kl=True)(b.rewards_B, b, None)


def test_ares_sequence_kl_per_bucket_masked_and_clamped(make_batch):
    """k3 per token is e^−δ − 1 + δ with δ = old − ref clamped to [−20, 20]; the sequence KL is its mean
    over valid tokens and the bucket KL the mean over the bucket's sequences; the KL EMA starts at the
    first value and then moves by 3 %.
    Easy group (2 ✓, 1 ✗): δ = 30 → 20 on every token ⇒ KL_easy = e^−20 + 19 for rows of 1 and 3 valid tokens.
    Hard group (2 ✗): δ = −30 → −20 ⇒ KL_hard = e^20 − 21. A second call with δ = 0 everywhere moves both
    EMAs to 0.97·KL."""
    groups = [[(True, [0.0]), (True, [0.0, 1.0, 1.0]), (False, [0.0, 1.0, 1.0])], [(False, [0.0, 1.0, 1.0])] * 2]
    b = _batch(make_batch, groups)
    b.ref_logp_BT = torch.tensor([[-30.0] * 3] * 3 + [[30.0] * 3] * 2)
    b.ref_logp_BT[0, 1:] = 99.0  # padding: must not enter the mean
    sh = _shaper(dynamic_kl=True)
    sh(b.rewards_B, b, None)
    kl_easy, kl_hard = math.exp(-20) + 19, math.exp(20) - 21
    assert sh.state_dict()["kl"]["kl_ema"] == pytest.approx({"easy": kl_easy, "hard": kl_hard}, rel=1e-6)
    b.ref_logp_BT = torch.zeros(5, 3)
    sh(b.rewards_B, b, None)
    assert sh.state_dict()["kl"]["kl_ema"] == pytest.approx({"easy": 0.97 * kl_easy, "hard": 0.97 * kl_hard}, rel=1e-6)
