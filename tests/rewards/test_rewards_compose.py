"""Reward composition, the verifier term and the basic terms (format, overlong, length)."""

import pytest
import torch

import entrolab.rewards  # noqa: F401
from entrolab.registry import REWARDS
from entrolab.rewards.basic import format_ok, linear_length_penalty, overlong_penalty
from entrolab.rewards.compose import PerSample, RewardError, compute_rewards, zscore
from entrolab.types import Verdict


class TinyTask:
    name = "tiny"
    answer_marker = "=>"

    def verify(self, prompt, completion):
        ok = completion.strip().endswith("=> 4")
        return Verdict(reward=float(ok), correct=ok, answer="4" if ok else None, reason="ok" if ok else "wrong_value")


def const_term(values):
    return lambda batch, task: (torch.tensor(values, dtype=torch.float32), {"x/seen": 1.0})


def test_verifier_uses_verdicts_and_fills_missing(make_batch):
    b = make_batch([1.0, 0.0, 0.5])
    vals, m = REWARDS.build("verifier")(b, TinyTask())
    assert vals.tolist() == [1.0, 0.0, 0.5]
    b = make_batch([0.0, 0.0], texts=["2+2 => 4", "nope"])
    b.verdicts = None
    vals, _ = REWARDS.build("verifier")(b, TinyTask())
    assert vals.tolist() == [1.0, 0.0] and b.verdicts[0].correct


def test_weighted_sum_logging_and_storage(make_batch):
    """terms a=[1,0,2] (w=2) and b=[0,3,1] (w=0.5) ⇒ r = [2, 1.5, 4.5]; logs raw means 1 and 4/3."""
    b = make_batch([0.0, 0.0, 0.0])
    r, m = compute_rewards(b, None, [("a", 2.0, const_term([1, 0, 2])), ("b", 0.5, const_term([0, 3, 1]))])
    assert r.tolist() == [2.0, 1.5, 4.5] and b.rewards_B is r
    assert m["reward/a"] == pytest.approx(1.0) and m["reward/b"] == pytest.approx(4 / 3)
    assert b.reward_terms["b"].tolist() == [0.0, 3.0, 1.0] and m["x/seen"] == 1.0


def test_normalize_zscores_each_term(make_batch):
    """a=[0,1] z-scores to [−1,1] (population std .5); b=[10,10] is constant → 0 ⇒ r = [−1, 1]."""
    b = make_batch([0.0, 0.0])
    r, _ = compute_rewards(b, None, [("a", 1.0, const_term([0, 1])), ("b", 1.0, const_term([10, 10]))],
                           normalize=True)
    assert torch.allclose(r, torch.tensor([-1.0, 1.0]), atol=1e-6)
    assert zscore(torch.tensor([3.0, 3.0])).tolist() == [0.0, 0.0]


def test_shapers_apply_in_order(make_batch):
    b = make_batch([0.0, 0.0])
    add = lambda r, batch, task: (r + 1, {"s/add": 1.0})  # noqa: E731
    dbl = lambda r, batch, task: (r * 2, {})  # noqa: E731
    r, m = compute_rewards(b, None, [("a", 1.0, const_term([1, 2]))], shapers=[("add", add), ("dbl", dbl)])
    assert r.tolist() == [4.0, 6.0] and m["s/add"] == 1.0


def test_raising_term_names_term_and_sample(make_batch):
    b = make_batch([0.0, 0.0, 0.0], texts=["fine", "x" * 100, "fine"])

    def fragile(batch, task):
        out = []
        for t in batch.texts:
            if t.startswith("x"):
                raise KeyError("boom")
            out.append(1.0)
        return torch.tensor(out), {}

    with pytest.raises(RewardError) as err:
        compute_rewards(b, None, [("fragile", 1.0, fragile)])
    msg = str(err.value)
    assert "'fragile'" in msg and "sample 1" in msg and "'p0'" in msg and "x" * 80 + "…" in msg
    assert "x" * 81 not in msg


def test_nan_value_names_sample(make_batch):
    b = make_batch([0.0, 0.0], group_id=[0, 1], texts=["a", "bad one"])
    with pytest.raises(RewardError, match=r"'nanny' gave nan for sample 1 \(prompt id 'p1', completion 'bad one'\)"):
        compute_rewards(b, None, [("nanny", 1.0, const_term([0.0, float("nan")]))])
    with pytest.raises(RewardError, match="shape"):
        compute_rewards(b, None, [("short", 1.0, const_term([0.0]))])
    inf_shaper = lambda r, batch, task: (r + float("inf"), {})  # noqa: E731
    with pytest.raises(RewardError, match="shaper 'inf'.*sample 0"):
        compute_rewards(b, None, [("a", 1.0, const_term([0.0, 1.0]))], shapers=[("inf", inf_shaper)])


def test_per_sample_adapter(make_batch):
    b = make_batch([0.0, 0.0], texts=["ab", "abcd"])
    vals, _ = PerSample(lambda p, text, v: len(text))(b, None)
    assert vals.tolist() == [2.0, 4.0]
    with pytest.raises(RewardError, match="sample 1"):
        PerSample(lambda p, text, v: 1 / (len(text) - 4))(b, None)


def test_format_ok_cases():
    assert format_ok("think => 4", "=>")
    assert not format_ok("think => ", "=>")  # blank answer
    assert not format_ok("a => 1 => 2", "=>")  # two markers
    assert not format_ok("no marker", "=>")
    assert format_ok(" => 4", "=>") and not format_ok(" => 4", "=>", require_scratchpad=True)


def test_format_reward(make_batch):
    b = make_batch([0.0, 0.0], texts=["x => 4", "x"])
    vals, m = REWARDS.build("format", {"penalty": -1.0})(b, TinyTask())
    assert vals.tolist() == [1.0, -1.0] and m["reward/format_ok"] == 0.5


def test_overlong_penalty_hand_values():
    """L_max=10, L_cache=4 ⇒ start 6: L=6 → 0; L=8 → (6−8)/4 = −.5; L=10 → −1; L=11 → −1."""
    pen = overlong_penalty(torch.tensor([0, 6, 8, 10, 11]), max_len=10, cache=4)
    assert pen.tolist() == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_length_penalty_and_registered_terms(make_batch):
    assert linear_length_penalty(torch.tensor([10, 40]), target=32, coef=0.5).tolist() == [0.0, -4.0]
    b = make_batch([0.0, 0.0], lengths=[2, 5], T=5)
    vals, _ = REWARDS.build("overlong", {"max_len": 5, "cache": 2})(b, None)
    assert vals.tolist() == [0.0, -1.0]  # start 3: L=5 → (3−5)/2
    with pytest.raises(Exception, match="cache"):
        REWARDS.build("overlong", {"max_len": 2, "cache": 4})
