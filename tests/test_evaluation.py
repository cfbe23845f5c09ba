"""Tests for entrolab.evaluation: per-prompt records, the pure summary, and the JSON round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch

from entrolab.evaluation import (
    EVAL_KEYS,
    NO_ANSWER,
    answer_entropy,
    eval_metrics,
    load_eval,
    prompt_record,
    summarize,
    write_eval,
)
from entrolab.types import Prompt, Verdict


def V(answer, correct):
    return Verdict(reward=float(correct), correct=correct, answer=answer, reason="ok" if correct else "wrong_value")


def two_prompts():
    """Prompt a: 4 samples, answers [x(correct), y(correct), x(correct), None]; lengths 2,1,3,0 tokens,
    entropies 1.0 on every token of sample 0 and 2.0 elsewhere → token entropy (2·1 + 4·2)/6 = 10/6.
    Prompt b: 4 samples, answers [z(wrong) ×4]; lengths 1 each, entropy 0.5 → 0.5.
    Greedy: a correct, b wrong."""
    mask_a = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    ent_a = torch.tensor([[1.0, 1.0, 9.0], [2.0, 9.0, 9.0], [2.0, 2.0, 2.0], [9.0, 9.0, 9.0]])
    ra = prompt_record(Prompt("a", "A?"), [V("x", True), V("y", True), V("x", True), V(None, False)],
                       mask_GT=mask_a, entropy_GT=ent_a, solutions=["x", "y", "w"],
                       greedy={"text": "x", "correct": True, "answer": "x"})
    mask_b = torch.tensor([[1, 0]] * 4, dtype=torch.bool)
    rb = prompt_record(Prompt("b", "B?"), [V("z", False)] * 4, mask_GT=mask_b,
                       entropy_GT=torch.full((4, 2), 0.5), solutions=None,
                       greedy={"text": "z", "correct": False, "answer": "z"})
    return ra, rb


def test_prompt_record_counts():
    ra, rb = two_prompts()
    assert ra["n"] == 4 and ra["correct"] == 3
    assert ra["answers"] == {"x": 2, "y": 1, NO_ANSWER: 1}
    assert ra["correct_answers"] == {"x": 2, "y": 1}
    assert ra["token_entropy"] == pytest.approx(10 / 6)
    assert ra["len_mean"] == pytest.approx(6 / 4)
    assert ra["solutions"] == ["x", "y", "w"]
    assert rb["correct"] == 0 and rb["correct_answers"] == {} and rb["solutions"] is None


def test_answer_entropy_hand_values():
    """{x:2, y:1, <none>:1} of 4: H = −(½ ln ½ + 2·¼ ln ¼) = 1.5 ln 2. One answer: 0.
    Uniform over 4 answers: ln 4."""
    assert answer_entropy({"x": 2, "y": 1, NO_ANSWER: 1}) == pytest.approx(1.5 * math.log(2))
    assert answer_entropy({"z": 4}) == 0.0
    assert answer_entropy({"a": 1, "b": 1, "c": 1, "d": 1}) == pytest.approx(math.log(4))
    with pytest.raises(ValueError):
        answer_entropy({})


def test_summarize_hand_values():
    """From two_prompts (n=4, c=3 and 0):
    pass@1 = (3/4 + 0)/2 = 3/8; pass@2 = (1 + 0)/2 = 1/2 (n−c=1 < 2); pass@4 = 1/2.
    mean@n = 3/8. greedy_acc = 1/2.
    token entropy over all tokens: prompt a 6 tokens summing to 10, prompt b 4 tokens of 0.5 → 12/10.
    answer entropy = (1.5 ln 2 + 0)/2. distinct correct = (2 + 0)/2 = 1."""
    s = summarize(two_prompts())
    assert s["pass@1"] == pytest.approx(3 / 8)
    assert s["pass@2"] == pytest.approx(1 / 2)
    assert s["pass@4"] == pytest.approx(1 / 2)
    assert "pass@8" not in s
    assert s["mean@n"] == pytest.approx(3 / 8)
    assert s["greedy_acc"] == pytest.approx(1 / 2)
    assert s["token_entropy"] == pytest.approx(12 / 10)
    assert s["answer_entropy"] == pytest.approx(0.75 * math.log(2))
    assert s["distinct_correct_mean"] == pytest.approx(1.0)
    assert s["num_prompts"] == 2


def test_mean_at_n_is_sample_weighted():
    """Unequal n: prompt 1 has 1/2 correct, prompt 2 has 4/4 → mean@n = 5/6 over all samples,
    while pass@1 is the prompt mean (1/2 + 1)/2 = 3/4."""
    m = torch.ones(1, 1, dtype=torch.bool)
    r1 = prompt_record(Prompt("p", "?"), [V("a", True), V("b", False)], mask_GT=m.expand(2, 1),
                       entropy_GT=None, solutions=None)
    r2 = prompt_record(Prompt("q", "?"), [V("a", True)] * 4, mask_GT=m.expand(4, 1),
                       entropy_GT=None, solutions=None)
    s = summarize([r1, r2])
    assert s["mean@n"] == pytest.approx(5 / 6)
    assert s["pass@1"] == pytest.approx(3 / 4)
    assert list(k for k in s if k.startswith("pass@")) == ["pass@1", "pass@2"]  # ks from the smallest n
    assert s["token_entropy"] is None and s["greedy_acc"] is None


def test_summarize_rejects_empty_and_k_too_large():
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    with pytest.raises(ValueError, match="k=8 > n=4"):
        summarize(two_prompts(), ks=[8])


def test_record_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="verdicts"):
        prompt_record(Prompt("p", "?"), [V("a", True)], mask_GT=torch.ones(2, 1, dtype=torch.bool),
                      entropy_GT=None, solutions=None)


def test_write_load_round_trip(tmp_path):
    recs = list(two_prompts())
    result = {"label": "base", "model": "m", "task": {"name": "countdown"}, "split": "test",
              "n_samples": 4, "temperature": 1.0, "ks": [1, 2, 4], "summary": summarize(recs), "prompts": recs}
    path = write_eval(result, tmp_path / "eval" / "base.json")
    assert path.exists() and not (tmp_path / "eval" / "base.json.tmp").exists()
    back = load_eval(path)
    assert back == json.loads(json.dumps(result))
    assert set(EVAL_KEYS) <= set(back)
    assert eval_metrics(back)["eval/pass@1"] == pytest.approx(3 / 8)


def test_load_eval_errors(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_eval(bad)
    bad.write_text(json.dumps({"label": "x"}))
    with pytest.raises(ValueError, match="missing keys: model"):
        load_eval(bad)
    with pytest.raises(ValueError, match="NaN"):
        write_eval({"summary": {"pass@1": float("nan")}}, tmp_path / "n.json")


# --------------------------------------------------------------------------- integration
def tiny_setup():
    from entrolab.models.tiny import build_tiny_model
    from entrolab.models.tokenizer import build_char_tokenizer
    from entrolab.tasks.countdown import Countdown

    task = Countdown(seed=0, n_train=0, n_validation=0, n_test=3)
    tok = build_char_tokenizer(task.charset())
    return build_tiny_model("tiny", tok, seed=0), tok, task


def test_evaluate_tiny_model_end_to_end(tmp_path):
    """A random tiny Llama on 3 Countdown prompts, n=4: the JSON has the contract's keys, its
    summary is summarize() of its own records, and its token entropy equals the mean over valid
    tokens of the sampler's entropy_BT when we redo the same sampler call with the same seed."""
    from entrolab.evaluation import evaluate
    from entrolab.rollout.sampler import sample

    model, tok, task = tiny_setup()
    calls = []
    kw = dict(split="test", n_samples=4, max_new_tokens=6, batch_size=64, seed=3)
    res = evaluate(model, tok, task, label="base", progress=lambda d, t: calls.append((d, t)), **kw)
    assert set(EVAL_KEYS) <= set(res) and res["label"] == "base" and res["ks"] == [1, 2, 4]
    assert res["task"] == {"name": "countdown"}
    assert res["summary"] == summarize(res["prompts"], ks=[1, 2, 4])
    assert res["summary"]["num_prompts"] == 3
    for rec, prompt in zip(res["prompts"], task.prompts("test")):
        assert rec["id"] == prompt.id and rec["n"] == 4 and sum(rec["answers"].values()) == 4
        assert rec["solutions"] == task.solutions(prompt)
        assert rec["greedy"] is not None and set(rec["greedy"]) == {"text", "correct", "answer"}
    assert calls[-1] == (3 * 5, 3 * 5) and [d for d, _ in calls] == sorted(d for d, _ in calls)

    batch = sample(model, tok, task.prompts("test"), group_size=4, max_new_tokens=6, batch_size=64,
                   generator=torch.Generator().manual_seed(3))
    m = batch.mask_BT
    assert res["summary"]["token_entropy"] == pytest.approx(float((batch.entropy_BT * m).sum() / m.sum()), rel=1e-6)
    assert [r["len_mean"] for r in res["prompts"]] == pytest.approx(m.sum(-1).view(3, 4).float().mean(-1).tolist())

    again = evaluate(model, tok, task, label="base", **kw)
    assert again == res  # same seed, same batch_size: same result
    assert load_eval(write_eval(res, tmp_path / "base.json")) == json.loads(json.dumps(res))


def test_evaluate_without_greedy_and_num_prompts():
    from entrolab.evaluation import evaluate

    model, tok, task = tiny_setup()
    res = evaluate(model, tok, task, label="x", num_prompts=2, n_samples=3, max_new_tokens=4,
                   greedy=False, batch_size=4)  # batch_size < 2·3: one prompt per sampler call
    assert res["summary"]["greedy_acc"] is None and res["ks"] == [1, 2, 3]
    assert [r["greedy"] for r in res["prompts"]] == [None, None]
    with pytest.raises(ValueError, match="n_samples"):
        evaluate(model, tok, task, label="x", n_samples=0, max_new_tokens=4)
