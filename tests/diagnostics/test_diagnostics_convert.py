"""`entrolab convert verl`: verl's documented dump format (<dir>/<step>.jsonl) to our rollout schema."""

from __future__ import annotations

import hashlib
import json

import pytest

from entrolab.cli import main
from entrolab.diagnostics.convert import convert_verl
from entrolab.diagnostics.schema import RolloutFormatError, read_rollouts


def write_dump(d, step, rows):
    """Lines as verl's RayPPOTrainer._write_generations writes them: input, output, gts, score, step + extras."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{step}.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"input": r[0], "output": r[1], "gts": r[2], "score": r[3], "step": step, **r[4]}) + "\n")


@pytest.fixture()
def dump(tmp_path):
    d = tmp_path / "val"
    write_dump(d, 0, [("Q: 1+1?", "2", "2", 1.0, {"acc": True, "pred": "2", "data_source": "gsm8k"}),
                      ("Q: 2+2?", "5", "4", 0.0, {"acc": False, "pred": "5", "data_source": "gsm8k"})])
    write_dump(d, 10, [("Q: 1+1?", "two", "2", 0.0, {"acc": False, "pred": "", "data_source": "gsm8k"}),
                       ("Q: 2+2?", "4", "4", 1.0, {"acc": True, "pred": "4", "data_source": "gsm8k"})])
    write_dump(d, 2, [("Q: 3+3?", "6", "6", 0.5, {"format": 0.5})])  # no acc: correct = score > 0
    return d


def test_convert_verl_maps_every_line(dump, tmp_path):
    path = convert_verl(dump, tmp_path / "out", run="grpo")
    samples = read_rollouts(path)
    # step order 0, 2, 10 (numeric, not lexical), nothing dropped
    assert [(s.step, s.run) for s in samples] == [(0, "base"), (0, "base"), (2, "grpo"), (10, "grpo"), (10, "grpo")]
    pid = hashlib.sha1(b"Q: 1+1?").hexdigest()[:16]
    assert samples[0].prompt_id == samples[3].prompt_id == pid != samples[1].prompt_id
    assert (samples[0].correct, samples[0].answer, samples[0].reward) == (True, "2", 1.0)
    assert (samples[3].correct, samples[3].answer) == (False, None)  # empty pred = no answer
    assert samples[2].correct is True and samples[2].rewards == {"format": 0.5}
    raw = [json.loads(ln) for ln in open(path)]
    assert raw[0]["meta"] == {"gts": "2", "data_source": "gsm8k"}


def test_convert_cli_and_no_base(dump, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["convert", "verl", str(dump), "--out", str(out), "--run", "r1", "--base-step", "-1"]) == 0
    assert f"rollouts: {out / 'r1.jsonl'}" in capsys.readouterr().out
    assert {s.run for s in read_rollouts(out / "r1.jsonl")} == {"r1"}


@pytest.mark.parametrize("line,match", [
    ({"input": "q", "output": "a", "step": 1}, r"1\.jsonl:1: missing verl dump keys \['score'\]"),
    ({"input": "q", "output": "a", "step": 1, "score": "x"}, "'score' must be a finite number"),
    ({"input": "q", "output": "a", "step": -1, "score": 1.0}, "'step' must be an integer >= 0"),
])
def test_bad_verl_lines_name_file_and_line(tmp_path, line, match):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "1.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(RolloutFormatError, match=match):
        convert_verl(d, tmp_path / "o")
    assert not (tmp_path / "o" / "verl.jsonl").exists() and not (tmp_path / "o" / "verl.jsonl.tmp").exists()


def test_convert_refuses_foreign_files_and_missing_dump(tmp_path, capsys):
    d = tmp_path / "mixed"
    write_dump(d, 1, [("q", "a", None, 1.0, {})])
    (d / "notes.jsonl").write_text("{}\n")
    with pytest.raises(RolloutFormatError, match=r"\['notes.jsonl'\] are not named <step>.jsonl"):
        convert_verl(d, tmp_path / "o")
    assert main(["convert", "verl", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "verl dump not found" in capsys.readouterr().err


def test_acc_wins_over_score_and_score_zero_is_wrong(tmp_path):
    """`acc` decides `correct` even when it disagrees with the score; without it, score 0 is wrong."""
    d = tmp_path / "d"
    write_dump(d, 1, [("q", "a", None, 0.5, {"acc": False}), ("q", "b", None, 0.0, {"acc": 1}),
                      ("q", "c", None, 0.0, {})])
    samples = read_rollouts(convert_verl(d, tmp_path / "deep" / "er" / "out"))  # parent folders are created
    assert [s.correct for s in samples] == [False, True, False]


def test_blank_lines_are_skipped_and_unicode_is_kept(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "3.jsonl").write_text(json.dumps({"input": "q", "output": "é", "score": 1.0, "step": 3}) + "\n\n"
                               + json.dumps({"input": "q", "output": "ü", "score": 0.0, "step": 3}) + "\n",
                               encoding="utf-8")
    path = convert_verl(d, tmp_path / "o")
    assert [s.completion for s in read_rollouts(path)] == ["é", "ü"]
    assert "é" in path.read_text(encoding="utf-8")  # written as UTF-8 text, not \\u escapes


@pytest.mark.parametrize("text,match", [
    ("{not json\n", r"5\.jsonl:1: not valid JSON"),
    ("[1, 2]\n", r"5\.jsonl:1: expected a JSON object, got list"),
    (json.dumps({"input": 1, "output": "a", "score": 1.0, "step": 5}) + "\n", "'input' and 'output' must be strings"),
    (json.dumps({"input": "q", "output": "a", "score": 1.0, "step": "5"}) + "\n", "'step' must be an integer"),
    ("\n", "the verl dump has no samples"),
])
def test_more_bad_dumps_are_named(tmp_path, text, match):
    d = tmp_path / "d"
    d.mkdir()
    (d / "5.jsonl").write_text(text)
    with pytest.raises(RolloutFormatError, match=match):
        convert_verl(d, tmp_path / "o")
    assert list((tmp_path / "o").iterdir()) == []  # no half-written file is left


def test_empty_dump_directory_says_what_it_expected(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(RolloutFormatError, match=r"no <step>.jsonl files \(is this trainer.validation_data_dir"):
        convert_verl(tmp_path / "e", tmp_path / "o")
