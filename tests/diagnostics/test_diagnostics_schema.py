"""Rollout schema, the JSONL reader's error messages, and the eval-JSON / run-directory loaders."""

import json

import pytest

from entrolab.diagnostics.inputs import NONE_ANSWER, load_dataset, read_eval_json
from entrolab.diagnostics.schema import RolloutFormatError, parse_sample, read_rollouts, sample_to_json

GOOD = {"prompt_id": 3, "run": "base", "step": 0, "completion": "1+2", "reward": 1.0, "correct": True, "answer": "1+2"}


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_minimal_sample_and_round_trip():
    s = parse_sample(dict(GOOD, logprobs=[-0.1, -0.2], entropies=[0.5, 0.4], phase_split=1, advantage=0.5))
    assert s.prompt_id == "3" and s.correct is True and s.num_tokens == 2
    assert parse_sample(sample_to_json(s)) == s


def test_malformed_json_names_the_line(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [json.dumps(GOOD), "", json.dumps(GOOD), "{not json"])
    with pytest.raises(RolloutFormatError, match=r"r\.jsonl:4: not valid JSON"):
        read_rollouts(path)


def test_bad_field_names_line_and_key(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [json.dumps(GOOD), json.dumps(dict(GOOD, reward="high"))])
    with pytest.raises(RolloutFormatError, match=r"r\.jsonl:2: 'reward' must be a number"):
        read_rollouts(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"entropy": [0.1]}, r"unknown key 'entropy'.*Did you mean 'entropies'"),
        ({"step": -1}, r"'step' must be an integer >= 0"),
        ({"correct": "yes"}, r"'correct' must be true/false"),
        ({"logprobs": [-1.0], "entropies": [1.0, 2.0]}, r"different lengths"),
        ({"logprobs": [-1.0], "phase_split": 3}, r"'phase_split' = 3 is past"),
        ({"reward": float("nan")}, r"'reward' must be finite"),
        ({"rewards": {"rm": "x"}}, r"'rewards.rm' must be a number"),
    ],
)
def test_schema_errors_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        parse_sample(dict(GOOD, **change))


def test_missing_required_key_is_named():
    bad = dict(GOOD)
    del bad["answer"]
    with pytest.raises(ValueError, match="missing required key.*answer"):
        parse_sample(bad)


def test_correct_sample_needs_an_answer(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [json.dumps(dict(GOOD, answer=None))])
    with pytest.raises(ValueError, match="correct sample needs its canonical 'answer'"):
        load_dataset([path])


def test_grouping_counts_answers(tmp_path):
    """Three samples of prompt 3: two correct '1+2', one unparsed -> n=3, c=2, '<none>' counted."""
    lines = [json.dumps(GOOD), json.dumps(GOOD), json.dumps(dict(GOOD, correct=False, answer=None, reward=0.0))]
    data = load_dataset([write_lines(tmp_path / "r.jsonl", lines)])
    g = data.models[("base", 0)].groups["3"]
    assert (g.n, g.c) == (3, 2)
    assert g.answer_counts == {"1+2": 2, NONE_ANSWER: 1}
    assert g.correct_counts == {"1+2": 2}


def eval_json(label, prompts):
    return {"label": label, "model": "m", "task": {}, "split": "test", "n_samples": 4, "temperature": 1.0,
            "ks": [1, 2, 4], "summary": {}, "prompts": prompts}


def test_eval_json_conversion(tmp_path):
    prompt = {"id": "p0", "text": "t", "n": 4, "correct": 2, "answers": {"a": 1, "b": 1, "<none>": 2},
              "correct_answers": {"a": 1, "b": 1}, "solutions": ["a", "b", "c"], "token_entropy": 0.5,
              "len_mean": 10.0, "greedy": None}
    path = tmp_path / "step_000010.json"
    path.write_text(json.dumps(eval_json("step_000010", [prompt])))
    m = read_eval_json(path)
    assert (m.run, m.step, m.source) == ("step_000010", 10, "eval")
    g = m.groups["p0"]
    assert (g.n, g.c, g.solutions, g.token_entropy, g.token_count) == (4, 2, ("a", "b", "c"), 0.5, 40.0)


def test_eval_json_inconsistent_counts_rejected(tmp_path):
    prompt = {"id": "p0", "n": 4, "correct": 5}
    path = tmp_path / "base.json"
    path.write_text(json.dumps(eval_json("base", [prompt])))
    with pytest.raises(RolloutFormatError, match=r"prompts\[0\]: 'correct' = 5 is outside"):
        read_eval_json(path)


def test_run_directories_with_same_labels_are_prefixed(tmp_path):
    """Two runs' base evals: identical counts are one evaluation (merged, with a note); different
    counts keep both, the second prefixed with its run's name."""
    prompt = {"id": "p0", "n": 2, "correct": 1, "answers": {"a": 1, "x": 1}, "correct_answers": {"a": 1}}
    other = {"id": "p0", "n": 2, "correct": 2, "answers": {"a": 2}, "correct_answers": {"a": 2}}
    for run, p in (("runA", prompt), ("runB", prompt), ("runC", other)):
        (tmp_path / run / "eval").mkdir(parents=True)
        (tmp_path / run / "eval" / "base.json").write_text(json.dumps(eval_json("base", [p])))
    data = load_dataset([tmp_path / "runA", tmp_path / "runB", tmp_path / "runC"])
    assert data.runs() == ["base", "runC/base"]
    assert any("runB" in n and "merged into 'base'" in n for n in data.notes)
    assert any("runC" in n and "kept as 'runC/base'" in n for n in data.notes)


def test_unknown_input_kind_and_missing_path(tmp_path):
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="expected a .jsonl rollout file"):
        load_dataset([tmp_path / "x.txt"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset([tmp_path / "nope.jsonl"])


def test_reads_what_evaluation_writes_and_agrees_with_its_summary(tmp_path):
    """An eval JSON made by entrolab.evaluation (prompt_record + summarize + write_eval) loads, and
    the diagnostics' answer / token entropy equal the evaluation summary's."""
    import torch

    from entrolab.diagnostics.sections_models import answer_entropy_section
    from entrolab.evaluation import prompt_record, summarize, write_eval
    from entrolab.types import Prompt, Verdict

    verdicts = [[Verdict(1.0, True, "a", "ok"), Verdict(0.0, False, None, "no_answer"), Verdict(1.0, True, "b", "ok")],
                [Verdict(0.0, False, "w", "wrong_value")] * 3]
    masks = [torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool), torch.ones(3, 3, dtype=torch.bool)]
    ents = [torch.arange(9.0).reshape(3, 3), torch.full((3, 3), 0.5)]
    records = [prompt_record(Prompt(f"p{i}", "t"), v, mask_GT=m, entropy_GT=e, solutions=["a", "b"])
               for i, (v, m, e) in enumerate(zip(verdicts, masks, ents))]
    result = {"label": "final", "model": "m", "task": {}, "split": "test", "n_samples": 3, "temperature": 1.0,
              "ks": [1, 2, 3], "summary": summarize(records, ks=[1, 2, 3]), "prompts": records}
    data = load_dataset([write_eval(result, tmp_path / "run" / "eval" / "final.json")])
    g = data.models[("final", 0)].groups["p0"]
    assert (g.n, g.c, g.solutions) == (3, 2, ("a", "b"))
    ours = answer_entropy_section(data)[0]["models"]["final"]
    assert ours["answer_entropy"] == pytest.approx(result["summary"]["answer_entropy"])
    assert ours["token_entropy"] == pytest.approx(result["summary"]["token_entropy"])
    assert ours["zero_correct_prompts"] == 1
