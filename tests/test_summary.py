"""The terminal summary of demo/train (issue 8 item 11), with hand-made eval results."""

from entrolab.summary import eval_summary_table


def _eval(ks, **summary):
    return {"split": "test", "n_samples": max(ks), "temperature": 1.0, "ks": ks,
            "summary": {"num_prompts": 4, **summary}}


def test_item11_summary_table_by_hand():
    """pass@k_max is taken at the largest k both evals have (4, not the trained run's 8);
    change = trained − base: 0.375 − 0.25 = +0.125, 0.5 − 0.75 = −0.25, 0.9 − 1.2 = −0.3."""
    base = _eval([1, 2, 4], **{"pass@1": 0.25, "pass@4": 0.75, "greedy_acc": 0.5, "token_entropy": 0.2,
                               "answer_entropy": 1.2})
    trained = _eval([1, 2, 4, 8], **{"pass@1": 0.375, "pass@4": 0.5, "pass@8": 0.75, "greedy_acc": None,
                                     "token_entropy": 0.1, "answer_entropy": 0.9})
    lines = [ln.split() for ln in eval_summary_table(base, trained).splitlines()]
    assert lines[0] == ["test", "split,", "4", "prompts", "×", "8", "samples,", "T", "=", "1.0"]
    assert lines[1] == ["metric", "base", "trained", "change"]
    assert lines[3] == ["pass@1", "0.250", "0.375", "+0.125"]
    assert lines[4] == ["pass@4", "0.750", "0.500", "-0.250"]
    assert lines[5] == ["greedy", "accuracy", "0.500", "—", "—"]
    assert lines[6] == ["token", "entropy", "(nats)", "0.200", "0.100", "-0.100"]
    assert lines[7] == ["answer", "entropy", "(nats)", "1.200", "0.900", "-0.300"]
    no_base = eval_summary_table(None, trained).splitlines()
    assert no_base[4].split() == ["pass@8", "—", "0.750", "—"]
