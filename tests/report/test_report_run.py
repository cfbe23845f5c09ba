"""Tests for the run report on a hand-written run directory (see conftest.write_run)."""

from __future__ import annotations

import base64
import re

from report_fixtures import eval_json, fake_run, write_run  # noqa: F401 (fake_run is a fixture)

from entrolab.report.html import PNG_SIGNATURE
from entrolab.report.rundata import load_run
from entrolab.report.run_report import crossover, write_run_report


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(u) for u in re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)', html)]


def test_rundata_reads_run(fake_run):
    run = load_run(fake_run)
    assert run.name == "fake"
    assert len(run.records) == 6  # 5 training lines + 1 eval line; the truncated tail is skipped
    assert any("skipped 1 unreadable" in n for n in run.notes)
    assert run.series("reward/mean")[0] == [1, 2, 3, 4, 5]
    assert run.last("reward/mean") == 0.5 and run.wall_time_s == 10.0 and run.num_steps == 5
    assert run.trained_label == "final"
    assert [lab for lab, _ in run.ordered_evals()] == ["base", "step_000003", "final"]


def test_report_contains_numbers_plots_and_recipe(fake_run):
    out = write_run_report(fake_run)
    assert out == fake_run / "report" / "index.html"
    html = out.read_text()
    # key numbers: final reward 0.5, wall time 5 steps × 2 s, base vs final pass@1 and pass@8
    assert "<td>final reward/mean</td><td>—</td><td>0.5</td>" in html
    assert "<td>pass@1</td><td>0.1234</td><td>0.4321</td>" in html
    assert "<td>pass@8</td><td>0.8</td><td>0.7</td>" in html
    assert "<td>greedy accuracy</td><td>0.25</td><td>0.875</td>" in html
    assert "<td>answer entropy (nats)</td><td>0.6</td><td>0.3141</td>" in html
    assert "<td>distinct correct answers / prompt</td><td>1.5</td><td>1.125</td>" in html
    assert "<td>wall time (s, sum of time/step_s)</td><td>—</td><td>10</td>" in html
    assert "<td>1</td><td>0.1234</td><td>0.4321</td><td>0.3087</td>" in html  # pass@k table row k=1
    assert "Base catches up with final at k = 8." in html
    assert "group_size: 8" in html  # the resolved recipe
    assert "step_000003" in html
    # PNGs: the 7 training panels + pass@k, all valid non-trivial PNG files, all embedded
    pngs = sorted((fake_run / "report").glob("*.png"))
    assert {p.stem for p in pngs} == {"reward", "pass_rate", "entropy", "kl", "clipfrac", "length", "eval", "passk"}
    for p in pngs:
        data = p.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 2000
    assert len(embedded_pngs(html)) == len(pngs)
    assert all(d.startswith(PNG_SIGNATURE) for d in embedded_pngs(html))


def test_missing_keys_and_files_do_not_crash(tmp_path):
    """Only reward/mean logged, no eval/, no recipe: the page says so instead of failing."""
    run = write_run(tmp_path, "bare", keys=("reward/mean",), recipe=False)
    html = write_run_report(run).read_text()
    assert "No evaluation files" in html and "recipe.yaml not found" in html
    stems = {p.stem for p in (run / "report").glob("*.png")}
    assert stems == {"reward", "eval"}  # eval/pass@1 comes from the metrics.jsonl eval line
    assert "<td>final reward/pass_rate</td><td>—</td><td>—</td>" in html


def test_empty_run_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    html = write_run_report(tmp_path / "empty").read_text()
    assert "No training metrics to plot" in html and "no metrics.jsonl" in html


def test_bad_eval_file_is_a_note(tmp_path):
    run = write_run(tmp_path, "r", evals={"final": eval_json("final", {1: 0.5, 2: 0.6})})
    (run / "eval" / "junk.json").write_text("{oops")
    html = write_run_report(run).read_text()
    assert "eval file skipped" in html and "not valid JSON" in html
    assert "<td>pass@1</td><td>—</td><td>0.5</td>" in html


def test_crossover():
    base = eval_json("base", {1: 0.1, 2: 0.2, 4: 0.9})
    assert crossover(base, eval_json("final", {1: 0.5, 2: 0.6, 4: 0.8}))["k"] == 4
    assert crossover(base, eval_json("final", {1: 0.5, 2: 0.6, 4: 0.95}))["status"] == "no_crossover"
    assert crossover(base, {"ks": [8], "summary": {"pass@8": 1.0}}) is None  # no shared k


def test_passk_band_from_prompt_records(tmp_path):
    """Per-prompt (n=4, c) = (0, 1, 2, 4): pass@1 = (0 + 1/4 + 1/2 + 1)/4 = 7/16; the bootstrap band
    from these records contains it, and the report draws the band without error."""
    from entrolab.report.plots import passk_bands

    res = eval_json("final", {1: 7 / 16, 2: 0.6, 4: 0.75})
    res["prompts"] = [{"n": 4, "correct": c} for c in (0, 1, 2, 4)]
    lo, hi = passk_bands(res)
    assert len(lo) == 3 and lo[0] <= 7 / 16 <= hi[0] and lo[0] < hi[0]
    assert passk_bands(eval_json("x", {1: 0.5})) is None  # no per-prompt records
    run = write_run(tmp_path, "banded", evals={"final": res, "base": eval_json("base", {1: 0.2, 2: 0.4, 4: 0.8})})
    html = write_run_report(run).read_text()
    assert "Base catches up with final at k = 4." in html
