"""Issue 12, engineer B item 1: the preference data format (JSONL, Parquet, datasets folder) and flip_labels."""

from __future__ import annotations

import json

import pytest

from entrolab.preference.data import PreferencePair, flip_labels, format_of, load_preferences, write_preferences

PAIRS = [
    PreferencePair("1 2 3>6:", "1+2+3#1+2+3", "1*2#1*2", 1.0, 1.0, 0.0, meta={"prompt_id": "train-00000"}),
    PreferencePair("1 2 3>6:", "3*2#3*2", "1-2#1-2", 0.75, None, None,
                   meta={"prompt_id": "train-00000", "source": "hand", "factors": [1.0, 0.5]}),
    PreferencePair("4 4 1>17:", "4*4+1#4*4+1", "#", 0.0, 2.5, -1.0, meta={}),
]


def _same(a: list[PreferencePair], b: list[PreferencePair]) -> None:
    assert a == b  # dataclass equality ignores meta (compare=False): check it separately
    assert [x.meta for x in a] == [x.meta for x in b]


@pytest.mark.parametrize("name", ["p.jsonl", "p.parquet", "p_ds"])
def test_item1_every_format_round_trips_pairs_scores_and_meta(tmp_path, name):
    """Each pair's label, scores and every meta key survive; a meta key only the 2nd pair has too.

    (``pyarrow.Table.from_pylist`` would take the first row's keys only and drop ``source``.)
    """
    path = write_preferences(PAIRS, tmp_path / name)
    _same(load_preferences(path), PAIRS)


def test_item1_format_is_chosen_from_the_path(tmp_path):
    assert format_of("a.jsonl") == "jsonl" and format_of("a.NDJSON") == "jsonl"
    assert format_of("a.parquet") == "parquet" and format_of(tmp_path) == "datasets"
    assert format_of("out/pairs") == "datasets" and format_of("x.txt", "jsonl") == "jsonl"
    with pytest.raises(ValueError, match=r"x\.csv: unknown preference file type '\.csv'"):
        format_of("x.csv")
    with pytest.raises(ValueError, match="unknown preference format 'csv'"):
        format_of("x.jsonl", "csv")
    with pytest.raises(FileNotFoundError, match="preference data not found"):
        load_preferences(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "p", "chosen": "a", "rejected": "a"}', "chosen and rejected responses are identical"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "label": 1.5}', r"'label' must be a number in \[0, 1\]"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "label": NaN}', "invalid JSON"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "label": true}', r"'label' must be a number"),
    ('{"prompt": "p", "chosen": "a"}', "'rejected' must be a string, got None"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "chosen_score": "high"}', "'chosen_score' must be a finite"),
    ('["p", "a", "b"]', "expected a JSON object"),
    ('{"prompt": "p", "chosen": "a", ', "invalid JSON"),
])
def test_item1_jsonl_malformed_row_names_file_and_line(tmp_path, line, message):
    """The bad row is line 3 (line 2 is blank and skipped): the error says ``file:3``."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{message}"):
        load_preferences(path)


def test_item1_parquet_row_errors_and_null_cells(tmp_path):
    """Parquet rows are named ``file: row N`` (1-based); a null label is the default 1, null extras are absent."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"prompt": ["p", "q"], "chosen": ["a", "c"], "rejected": ["b", "d"],
                             "label": [None, 0.25], "note": ["x", None]}), good)
    pairs = load_preferences(good)
    assert [x.label for x in pairs] == [1.0, 0.25]
    assert pairs[0].meta == {"note": "x"} and pairs[1].meta == {}
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["p", "q"], "chosen": ["a", "same"], "rejected": ["b", "same"]}), bad)
    with pytest.raises(ValueError, match=r"bad\.parquet: row 2: chosen and rejected responses are identical"):
        load_preferences(bad)


def test_item1_datasets_folder_rows_and_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"prompt": ["p", "q"], "chosen": ["a", "c"], "rejected": ["b", "d"], "label": [1.0, 2.0]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"bad: row 2: 'label' must be a number in \[0, 1\], got 2\.0"):
        load_preferences(tmp_path / "bad")
    ok = datasets.Dataset.from_dict({**rows, "label": [1.0, 0.5]})
    datasets.DatasetDict({"train": ok, "test": ok.select([0])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\]; say which with split="):
        load_preferences(tmp_path / "dd")
    assert [x.label for x in load_preferences(tmp_path / "dd", split="train")] == [1.0, 0.5]
    assert len(load_preferences(tmp_path / "dd", split="test")) == 1
    with pytest.raises(ValueError, match=r"dd: no split 'dev'"):
        load_preferences(tmp_path / "dd", split="dev")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a folder written by datasets' save_to_disk"):
        load_preferences(tmp_path / "plain")


def test_item1_empty_file_and_meta_clash(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"e\.jsonl: no preference pairs"):
        load_preferences(tmp_path / "e.jsonl")
    clash = [PreferencePair("p", "a", "b", meta={"label": 0.0})]
    with pytest.raises(ValueError, match=r"meta keys \['label'\] clash"):
        write_preferences(clash, tmp_path / "c.jsonl")


def test_item1_jsonl_writer_refuses_nan_scores(tmp_path):
    """A NaN score would be written as the token NaN, which our own reader (rightly) rejects."""
    with pytest.raises(ValueError, match="Out of range float"):
        write_preferences([PreferencePair("p", "a", "b", meta={"x": float("nan")})], tmp_path / "n.jsonl")


def _ten():
    return [PreferencePair(f"p{i}", f"good{i}", f"bad{i}", 1.0, 1.0, 0.0, meta={"i": i}) for i in range(10)]


def test_item1_flip_labels_flips_exactly_round_frac_n_deterministically():
    """n = 10, frac = 0.25: 2.5 rounds half-up to 3 flipped pairs (Python's round would give 2)."""
    pairs = _ten()
    out = flip_labels(pairs, frac=0.25, seed=0)
    flipped = [x for x in out if x.meta["flipped"]]
    assert len(flipped) == 3
    for x in flipped:  # texts and scores swapped, the label kept (the data now prefers the worse one)
        i = x.meta["i"]
        assert (x.chosen, x.rejected) == (f"bad{i}", f"good{i}")
        assert (x.chosen_score, x.rejected_score, x.label) == (0.0, 1.0, 1.0)
    for x in out:
        if not x.meta["flipped"]:
            assert x == pairs[x.meta["i"]]
    assert [x.meta for x in flip_labels(pairs, frac=0.25, seed=0)] == [x.meta for x in out]
    assert pairs[0].meta == {"i": 0} and pairs[0].chosen == "good0"  # input untouched
    assert sum(x.meta["flipped"] for x in flip_labels(pairs, frac=0.0, seed=0)) == 0
    assert all(x.meta["flipped"] for x in flip_labels(pairs, frac=1.0, seed=0))
    assert sum(x.meta["flipped"] for x in flip_labels(pairs, frac=0.04, seed=0)) == 0  # 0.4 rounds to 0
    assert sum(x.meta["flipped"] for x in flip_labels(pairs, frac=0.05, seed=0)) == 1  # 0.5 rounds up


def test_item1_flip_labels_seed_picks_the_pairs_and_flipping_twice_restores():
    pairs = _ten()
    a = {x.meta["i"] for x in flip_labels(pairs, frac=0.5, seed=0) if x.meta["flipped"]}
    b = {x.meta["i"] for x in flip_labels(pairs, frac=0.5, seed=1) if x.meta["flipped"]}
    assert len(a) == len(b) == 5 and a != b
    twice = flip_labels(flip_labels(pairs, frac=1.0, seed=0), frac=1.0, seed=3)
    assert twice == pairs and not any(x.meta["flipped"] for x in twice)
    with pytest.raises(ValueError, match=r"frac must be a number in \[0, 1\]"):
        flip_labels(pairs, frac=1.5, seed=0)


def test_item1_flipped_pairs_round_trip_through_jsonl(tmp_path):
    out = flip_labels(_ten(), frac=0.3, seed=2)
    path = write_preferences(out, tmp_path / "f.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert sum(r["flipped"] for r in rows) == 3
    _same(load_preferences(path), out)


def test_item1_cli_check_validates_counts_and_converts(tmp_path, capsys):
    from entrolab.cli import main

    src = write_preferences(flip_labels(PAIRS, frac=0.34, seed=0), tmp_path / "p.jsonl")  # 1.02 → 1 flipped
    assert main(["prefs", "check", str(src), "--to", str(tmp_path / "p.parquet")]) == 0
    out = capsys.readouterr().out
    assert "3 pairs, 2 prompts, 2 with a soft label (< 1), 1 flipped" in out
    _same(load_preferences(tmp_path / "p.parquet"), load_preferences(src))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    assert main(["prefs", "check", str(bad)]) == 1
    assert "bad.jsonl:2: 'rejected' must be a string, got None" in capsys.readouterr().err
