"""Tests for the comparison page."""

from __future__ import annotations

import pytest
from report_fixtures import eval_json, fake_run, write_run  # noqa: F401 (fake_run is a fixture)

from entrolab.report.compare import write_comparison
from entrolab.report.html import PNG_SIGNATURE


def test_comparison_lists_both_runs(tmp_path, fake_run):
    other = write_run(tmp_path, "other", steps=3, keys=("reward/mean", "policy/entropy"),
                      evals={"final": eval_json("final", {1: 0.777, 2: 0.8})})
    out = write_comparison([fake_run, other], tmp_path / "cmp")
    html = out.read_text()
    assert out == tmp_path / "cmp" / "index.html"
    # one row per run: name, steps, final reward, final pass rate, final entropy, base pass@1, pass@1, ...
    assert "<td>fake</td><td>5</td><td>0.5</td><td>0.5</td><td>0.2</td><td>0.1234</td><td>0.4321</td><td>8</td>" in html
    assert "<td>other</td><td>3</td><td>0.3</td><td>—</td><td>0.3333</td><td>—</td><td>0.777</td><td>2</td>" in html
    pngs = list((tmp_path / "cmp").glob("*.png"))
    assert (tmp_path / "cmp" / "passk.png") in pngs
    assert (tmp_path / "cmp" / "reward_reward_mean.png") in pngs
    assert (tmp_path / "cmp" / "eval_eval_pass@1.png".replace("@", "at")) in pngs
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in pngs)


def test_same_names_are_disambiguated(tmp_path):
    a = write_run(tmp_path / "a", "run", steps=2)
    b = write_run(tmp_path / "b", "run", steps=2)
    html = write_comparison([a, b], tmp_path / "cmp").read_text()
    assert f"run ({a})" in html and f"run ({b})" in html


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        write_comparison([], tmp_path)
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        write_comparison([tmp_path / "nope"], tmp_path / "cmp")
