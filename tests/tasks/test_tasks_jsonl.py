"""The jsonl task: GSM8K-style files, extractors, matching, malformed rows, Parquet."""

import json
import math
import operator
import time

import pytest

from entrolab.registry import TASKS
from entrolab.tasks.answers import (TimedWorker, extract_boxed, extract_gsm8k, extract_last_number,
                                    math_verify_available, parse_number)
from entrolab.tasks.jsonl import JsonlTask
from entrolab.types import Task

GSM = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 7"},
    {"question": "A shop sells 1,200 pens a day. How many in 2 days?", "answer": "1200*2=2400\n#### 2,400"},
]


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def gsm(tmp_path):
    return _write_jsonl(tmp_path / "gsm.jsonl", GSM)


def test_gsm8k_exact(gsm):
    t = JsonlTask(path=gsm)
    assert isinstance(t, Task) and t.charset() is None and t.answer_marker is None
    p0, p1 = t.prompts("train")
    assert p0.id == "row-00000" and p0.text == GSM[0]["question"] and t.solutions(p0) == ["7"]
    assert t.solutions(p1) == ["2,400"]  # exact matching keeps the text as written
    assert t.verify(p0, "3 plus 4 is 7.\n#### 7").reason == "ok"
    assert t.verify(p0, "#### 8").reason == "wrong_value"
    assert t.verify(p0, "the answer is 7").reason == "no_answer"
    assert t.verify(p1, "#### 2400").reason == "wrong_value"  # exact is exact
    v = t.verify(p1, "#### 2,400\nDone")
    assert (v.reason, v.answer, v.reward) == ("ok", "2,400", 1.0)


def test_numeric_match(gsm):
    """1,200*2 = 2400: '2400', '2,400', '$2,400', '2400.00' all equal 2400 exactly."""
    t = JsonlTask(path=gsm, match="numeric")
    p0, p1 = t.prompts("test")
    assert t.solutions(p1) == ["2400"]
    for ans in ("2400", "2,400", "$2,400", "2400.00", "4800/2"):
        v = t.verify(p1, f"#### {ans}")
        assert (v.reason, v.answer) == ("ok", "2400"), ans
    assert t.verify(p1, "#### 2401").reason == "wrong_value"
    assert t.verify(p1, "#### about 2400 pens").reason == "parse_error"
    assert t.verify(p0, "#### 7.0000001").reason == "ok"          # within rel_tol 1e-6
    assert JsonlTask(path=gsm, match="numeric", rel_tol=0).verify(p0, "#### 7.0000001").reason == "wrong_value"


def test_boxed_last_number_marker_and_template(tmp_path):
    rows = [{"q": "Half of one?", "a": "\\frac{1}{2}", "topic": "fractions"},
            {"q": "Two plus two?", "a": 4, "topic": "sums"}]
    path = _write_jsonl(tmp_path / "m.jsonl", rows)
    t = JsonlTask(path=path, prompt_key="q", answer_key="a", answer_extractor="boxed",
                  template="[{topic}] {prompt}", answer_marker="</think>")
    p0, p1 = t.prompts("train")
    assert p0.text == "[fractions] Half of one?" and t.solutions(p1) == ["4"]  # reference: auto -> raw
    assert t.verify(p0, "hmm \\boxed{1}</think>so \\boxed{\\frac{1}{2}}").reason == "ok"
    assert t.verify(p0, "\\boxed{\\frac{1}{2}}").reason == "no_answer"   # marker missing
    assert t.verify(p0, "</think>\\boxed{\\frac{1}{2}").reason == "no_answer"  # unbalanced
    n = JsonlTask(path=path, prompt_key="q", answer_key="a", answer_extractor="last_number",
                  reference_extractor="raw")
    assert n.verify(n.prompts("train")[1], "2+2 is 4, not 5 or 3; so 4").reason == "ok"
    assert n.verify(n.prompts("train")[1], "it's 4 or maybe 5").reason == "wrong_value"


def test_extractors_hand_cases():
    assert extract_gsm8k("a\n#### 5\n#### 6 \nmore") == "6"
    assert extract_gsm8k("no marker") is None
    assert extract_boxed("\\boxed{1} and \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert extract_last_number("1,234 then -5.5 and 12,34") == "34"
    assert extract_last_number("x") is None
    assert parse_number("-3.50") == pytest.approx(-3.5) and parse_number("1e3") is None
    assert parse_number("3/0") is None and parse_number("9" * 200) is None


def test_long_completions_are_fast(gsm):
    t = JsonlTask(path=gsm, answer_extractor="raw", max_answer_chars=50)
    p = t.prompts("train")[0]
    start = time.perf_counter()
    assert t.verify(p, "7" + " blah" * 2000).reason == "too_long"
    g = JsonlTask(path=gsm, match="numeric")
    assert g.verify(g.prompts("train")[0], "1 " * 5000 + "#### 7").reason == "ok"
    with pytest.raises(ValueError, match="non-numeric reference"):
        g.verify(p, "#### 7")  # p's reference was read by the 'raw' task: a clear error
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("lines, message", [
    ([GSM[0], GSM[1], '{"question": "x", "answer": '], r"bad\.jsonl:3: invalid JSON"),
    ([GSM[0], {"question": "x"}], r"bad\.jsonl:2: missing key 'answer' \(row has: question\)"),
    ([{"question": ["x"], "answer": "1"}], r"bad\.jsonl:1: 'question' must be a string, got list"),
    ([{"question": "x", "answer": True}], r"bad\.jsonl:1: 'answer' must be a string or a number, got bool"),
    ([GSM[0], "", "[1, 2]"], r"bad\.jsonl:3: expected a JSON object, got list"),  # blank line still counted
])
def test_malformed_rows_name_file_and_line(tmp_path, lines, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=message):
        JsonlTask(path=path)


def test_reference_errors_name_the_line(tmp_path):
    path = _write_jsonl(tmp_path / "r.jsonl", [GSM[0], {"question": "q", "answer": "no marker here"}])
    with pytest.raises(ValueError, match=r"r\.jsonl:2: reference_extractor 'gsm8k' found no answer"):
        JsonlTask(path=path, reference_extractor="gsm8k")
    with pytest.raises(ValueError, match=r"r\.jsonl:2: match='numeric' but the reference"):
        JsonlTask(path=path, match="numeric")


def test_splits_by_column_and_by_files(tmp_path):
    rows = [dict(GSM[0], split="train", uid="a"), dict(GSM[1], split="test", uid="b")]
    path = _write_jsonl(tmp_path / "s.jsonl", rows)
    t = JsonlTask(path=path, split_key="split", id_key="uid", demo_key="answer")
    assert [p.id for p in t.prompts("train")] == ["a"] and [p.id for p in t.prompts("test")] == ["b"]
    assert t.demonstration(t.prompts("train")[0], None) == GSM[0]["answer"]
    with pytest.raises(ValueError, match=r"no split 'validation' in .*s.jsonl \(split column 'split'\); "
                                         r"this task has: test, train"):
        t.prompts("validation")
    f = JsonlTask(paths={"train": path, "test": _write_jsonl(tmp_path / "t.jsonl", GSM[:1])})
    assert [p.id for p in f.prompts("test")] == ["test-00000"] and len(f.prompts("train")) == 2
    assert f.demonstration(f.prompts("test")[0], None) is None
    dup = _write_jsonl(tmp_path / "d.jsonl", [dict(GSM[0], uid="a"), dict(GSM[1], uid="a")])
    with pytest.raises(ValueError, match=r"d\.jsonl:2: duplicate id 'a' \(first at .*d\.jsonl:1\)"):
        JsonlTask(path=dup, id_key="uid")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "g.parquet"
    pq.write_table(pa.Table.from_pylist(GSM), path)
    t = TASKS.build("jsonl", {"path": str(path), "match": "numeric"})
    p = t.prompts("train")[1]
    assert p.meta["source"].endswith("g.parquet: row 2") and t.verify(p, "#### 2400").correct
    bad = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist([GSM[0], {"question": None, "answer": "#### 1"}]), bad)
    with pytest.raises(ValueError, match=r"b\.parquet: row 2: 'question' must be a string, got NoneType"):
        JsonlTask(path=str(bad))


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of 'path'"),
    (dict(path="x.jsonl", match="fuzzy"), "match must be one of"),
    (dict(path="x.jsonl", answer_extractor="first"), "answer_extractor must be one of"),
    (dict(path="missing.jsonl"), "file not found"),
    (dict(path="x.jsonl", template="{prompt.__class__}"), "plain name"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JsonlTask(**kwargs)


def test_math_verify_needs_its_extra(gsm):
    if math_verify_available():
        t = JsonlTask(path=gsm, answer_extractor="boxed", reference_extractor="gsm8k", match="math_verify")
        p = t.prompts("train")[0]
        assert t.verify(p, "\\boxed{\\frac{14}{2}}").reason == "ok"
        assert t.verify(p, "\\boxed{8}").reason == "wrong_value"
        t.close()
    else:
        with pytest.raises(ValueError, match=r"pip install 'entrolab\[math\]'"):
            JsonlTask(path=gsm, match="math_verify")


def test_timed_worker_bounds_time_and_recovers():
    w = TimedWorker(timeout_s=1.0, warmup=list)  # spawning is not timed: only the calls are
    try:
        assert w.call(operator.add, 2, 3) == (True, 5)
        start = time.perf_counter()
        assert w.call(time.sleep, 30) == (False, "timeout")
        assert time.perf_counter() - start < 5
        ok, msg = w.call(math.sqrt, -1)
        assert not ok and msg.startswith("error: ValueError")
        assert w.call(operator.mul, 6, 7) == (True, 42)  # a fresh worker after the kill
    finally:
        w.close()


# ---------------------------------------------------------------- item 8: edge cases of JSONL files
@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank_only"])
def test_item8_empty_file_is_an_error_naming_it(tmp_path, content, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(content)
    with pytest.raises(ValueError, match=f"{empty}: the file has no rows"):
        JsonlTask(path=str(empty))
    good = _write_jsonl(tmp_path / "gsm.jsonl", GSM)
    with pytest.raises(ValueError, match=f"{empty}: the file has no rows"):
        JsonlTask(paths={"train": str(empty), "test": good})
    # `entrolab validate` builds the task, so it catches the file before any training starts
    from entrolab.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: {{name: jsonl, path: {empty}}}\n")
    assert main(["validate", str(recipe)]) == 2
    assert f"{empty}: the file has no rows" in capsys.readouterr().err


@pytest.mark.parametrize("answer, message", [
    ("NaN", ":2: invalid JSON: NaN is not a finite JSON number"),
    ("-Infinity", ":2: invalid JSON: -Infinity is not a finite JSON number"),
    ("1e400", ":2: 'answer' is inf (not a finite number)"),  # overflows to inf without a constant
    ("7" * 5000, ":2: invalid JSON: an integer of 5000 digits, more than Python reads"),
])
def test_item8_non_finite_or_unreadable_answers_name_the_line(tmp_path, answer, message):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GSM[0]) + "\n" + '{"question": "q", "answer": ' + answer + "}\n")
    for match in ("exact", "numeric"):
        with pytest.raises(ValueError) as err:
            JsonlTask(path=str(path), match=match)
        assert str(err.value).startswith(f"{path}{message}")


def test_item8_prompt_and_reference_size_limits(tmp_path):
    long_q = {"question": "x" * 20_001, "answer": "#### 1"}
    path = _write_jsonl(tmp_path / "d.jsonl", [GSM[0], long_q])
    with pytest.raises(ValueError, match=rf"d.jsonl:2: the prompt has 20001 characters, more than "
                                         rf"max_prompt_chars=20000 \(raise task.max_prompt_chars"):
        JsonlTask(path=path)
    assert len(JsonlTask(path=path, max_prompt_chars=20_001).prompts("train")) == 2
    # the template counts: the limit is on the text the model is given
    with pytest.raises(ValueError, match="d.jsonl:1: the prompt has .* max_prompt_chars=30"):
        JsonlTask(path=path, template="Question: {prompt}", max_prompt_chars=30)
    long_a = _write_jsonl(tmp_path / "a.jsonl", [{"question": "q", "answer": "y" * 50 + "\n#### 1"}])
    with pytest.raises(ValueError, match="a.jsonl:1: 'answer' has 57 characters, more than max_reference_chars=40"):
        JsonlTask(path=long_a, max_reference_chars=40)
    with pytest.raises(ValueError, match="a.jsonl:1: 'answer' has 57 characters, more than max_reference_chars=40"):
        JsonlTask(path=long_a, demo_key="answer", max_reference_chars=40, answer_key="question")


def test_item8_long_numbers_get_their_own_reason(tmp_path):
    big = "7" * 5000
    path = _write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": big}])
    with pytest.raises(ValueError, match=r"d.jsonl:1: match='numeric' but the reference is a number of 5000 "
                                         r"characters; numeric matching reads numbers of at most 100"):
        JsonlTask(path=path, match="numeric")
    t = JsonlTask(path=_write_jsonl(tmp_path / "g.jsonl", GSM), match="numeric", max_answer_chars=10_000)
    p = t.prompts("train")[0]
    assert t.verify(p, "#### " + big).reason == "too_long"  # a number, only too long to read
    assert t.verify(p, "#### 7 apples").reason == "parse_error"  # not a number at all
    assert t.verify(p, "#### 7").reason == "ok"


def test_item8_missing_split_names_the_file(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{**GSM[0], "split": "test"}])
    t = JsonlTask(path=path, split_key="split")
    with pytest.raises(ValueError, match=rf"no split 'train' in {path} \(split column 'split'\); this task has: test"):
        t.prompts("train")
