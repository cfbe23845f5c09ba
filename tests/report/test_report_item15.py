"""Issue 8, item 15: the run report's plots, support section, summary sentences and layout.

Figures are inspected as matplotlib objects (axis labels, legend texts, band polygons), the page as
HTML, on run directories written by hand (report_fixtures.write_run).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from report_fixtures import eval_json, write_run

from entrolab.batch_logging import batch_metrics
from entrolab.report.html import Page
from entrolab.report.plots import line_figure
from entrolab.report.rundata import load_run
from entrolab.report.run_report import training_figures, write_run_report

KL_RECIPE = "name: klrun\nobjective:\n  regularizers:\n    - {name: kl_to_ref, beta: 0.04, estimator: k2}\n"


def figures_of(run_dir):
    return {slug: fig for slug, _, fig in training_figures(load_run(run_dir))}


def legend_texts(fig):
    legend = fig.axes[0].get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def band_ys(fig):
    """y values of every shaded band (fill_between polygons) on the figure's axes."""
    return [y for coll in fig.axes[0].collections for path in coll.get_paths() for _, y in path.vertices]


def test_item15_every_training_plot_has_a_ylabel_with_units(tmp_path):
    figs = figures_of(write_run(tmp_path, "r"))
    assert set(figs) == {"reward", "pass_rate", "entropy", "kl", "clipfrac", "length", "eval"}
    labels = {slug: fig.axes[0].get_ylabel() for slug, fig in figs.items()}
    assert "nats" in labels["entropy"] and "nats" in labels["kl"]
    assert "fraction" in labels["pass_rate"] and "fraction" in labels["clipfrac"] and "fraction" in labels["eval"]
    assert "tokens" in labels["length"] and "reward" in labels["reward"]
    with pytest.raises(ValueError, match="y-axis label"):
        line_figure({"a": ([1], [1.0])}, title="t", ylabel="")


def test_item15_kl_plot_has_legend(tmp_path):
    """The KL panel names each estimator and its direction; kl/ref's estimator comes from the recipe."""
    run = write_run(tmp_path, "klrun")
    (run / "recipe.yaml").write_text(KL_RECIPE)
    texts = legend_texts(figures_of(run)["kl"])
    assert texts == ["k3 estimate of KL(π_old‖π_θ), old → updated policy [policy/approx_kl]",
                     "k2 estimate of KL(π_θ‖π_ref), policy → reference [kl/ref]"]
    # A run without kl_to_ref logs only policy/approx_kl: a single curve still gets its legend.
    only = write_run(tmp_path, "nokl", keys=("policy/approx_kl",))
    assert legend_texts(figures_of(only)["kl"]) == [
        "k3 estimate of KL(π_old‖π_θ), old → updated policy [policy/approx_kl]"]


def _zero_one_run(tmp_path, *, quantiles: bool):
    """pass rate 0.1 with a 0/1 reward: mean 0.1, std 0.3 (mean − std = −0.2 < 0); q10 0, q90 1."""
    run = tmp_path / "zo"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: zo\n")
    lines = []
    for s in range(1, 6):
        rec = {"step": s, "reward/mean": 0.1, "reward/std": 0.3, "reward/pass_rate": 0.1}
        if quantiles:
            rec.update({"reward/q10": 0.0, "reward/q90": 1.0})
        lines.append(json.dumps(rec))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_item15_zero_one_reward_band_stays_in_its_range(tmp_path):
    fig = figures_of(_zero_one_run(tmp_path, quantiles=True))["reward"]
    ys = band_ys(fig)
    assert ys and min(ys) == 0.0 and max(ys) == 1.0  # the 10–90 % band, never mean − std = −0.2
    assert "10–90 %" in fig.axes[0].get_title()
    # Runs from before the quantiles were logged get no band rather than mean ± std.
    assert band_ys(figures_of(_zero_one_run(tmp_path / "old", quantiles=False))["reward"]) == []


def test_item15_batch_metrics_log_reward_quantiles(make_batch):
    """Rewards 0..9: torch/numpy linear quantiles at 0.1·9 = 0.9 and 0.9·9 = 8.1 → 0.9 and 8.1."""
    batch = make_batch(list(range(10)))
    batch.adv_BT = torch.zeros_like(batch.old_logp_BT)
    m = batch_metrics(batch)
    assert m["reward/q10"] == pytest.approx(0.9) and m["reward/q90"] == pytest.approx(8.1)
    zero_one = make_batch([0.0] * 9 + [1.0])
    zero_one.adv_BT = torch.zeros_like(zero_one.old_logp_BT)
    m = batch_metrics(zero_one)
    assert m["reward/q10"] == 0.0 and m["reward/q90"] == pytest.approx(0.1)  # 0 + 0.1·(1 − 0)


def _prompt(pid, n, correct_answers, solutions=("a", "b", "c")):
    c = sum(correct_answers.values())
    return {"id": pid, "text": "t", "n": n, "correct": c, "answers": {**correct_answers, "w": n - c} if c < n else
            dict(correct_answers), "correct_answers": correct_answers, "solutions": list(solutions),
            "token_entropy": 0.5, "len_mean": 4.0, "greedy": None}


def support_run(tmp_path):
    """Correct answers per prompt, base → final: p0 {a, b} → {a, c}; p1 {} → {a}; p2 {a} → {}.

    Answer level: preserved 1 (p0 a), expanded 2 (p0 c, p1 a), shrunk 2 (p0 b, p2 a):
    SRR = P/(P+S) = 1/3, NDR = E/(P+E) = 2/3, SDS = 2·(1/3)(2/3)/(1/3 + 2/3) = 4/9, NSCR = 0. Problem level: p0 preserved, p1 expanded, p2 shrunk.
    Coverage of the 3 listed solutions: base (2 + 0 + 1)/9 = 1/3, final (2 + 1 + 0)/9 = 1/3.
    64 samples per prompt: ε = 1 − 0.05^(1/64) = 0.04573.
    """
    base = eval_json("base", {1: 0.18, 2: 0.3, 4: 0.5, 64: 0.76}, answer_entropy=0.9)
    base["prompts"] = [_prompt("p0", 64, {"a": 20, "b": 5}), _prompt("p1", 64, {}), _prompt("p2", 64, {"a": 1})]
    final = eval_json("final", {1: 0.27, 2: 0.4, 4: 0.55, 64: 0.61}, answer_entropy=0.4)
    final["prompts"] = [_prompt("p0", 64, {"a": 40, "c": 1}), _prompt("p1", 64, {"a": 2}), _prompt("p2", 64, {})]
    return write_run(tmp_path, "sharpen", evals={"base": base, "final": final})


def test_item15_support_section_in_run_report(tmp_path):
    run = support_run(tmp_path)
    html = write_run_report(run).read_text()
    assert "Support change (base vs trained)" in html
    # model, level, preserved, expanded, shrunk, out_of_support, SRR, NDR, SDS, NSCR
    assert "<td>final</td><td>answer level</td><td>1</td><td>2</td><td>2</td><td>0</td><td>0.3333</td><td>0.6667</td><td>0.4444</td><td>0</td>" in html
    assert "<td>final</td><td>problem level</td><td>1</td><td>1</td><td>1</td><td>0</td><td>0.5</td><td>0.5</td>" in html
    # model, budget k, epsilon, coverage (mean)
    assert "<td>base</td><td>64</td><td>0.04573</td><td>0.3333</td>" in html
    assert (run / "report" / "support" / "support_0.png").exists()


def test_item15_summary_sentences_state_what_happened(tmp_path):
    html = write_run_report(support_run(tmp_path)).read_text()
    what = html.split("<h2>What happened</h2>")[1].split("<h2>")[0]
    assert ("pass@1 rose from 0.18 to 0.27 while pass@64 fell from 0.76 to 0.61 (final vs base): "
            "RL sharpened the distribution") in what
    # Training: reward/mean 0.1·s over 5 steps, window max(1, 5 // 10) = 1 → 0.10 to 0.50.
    assert "Over 5 training steps the mean reward per rollout rose from 0.10 to 0.50" in what
    assert ("On 3 shared prompts, 1 distinct correct answer(s) were found by both models, 2 only by final "
            "(expanded) and 2 only by base (shrunk) (SRR 0.33, NDR 0.67): no net change") in what
    assert "answer entropy fell from 0.90 to 0.40 nats" in what
    assert "Base catches up with final at k = 64." in what  # 0.76 > 0.61: a real crossing


def test_item15_saturated_curves_do_not_catch_up(tmp_path):
    """Both curves at 1.0 from k = 4: a tie at the ceiling, not the base catching up."""
    evals = {"base": eval_json("base", {1: 0.5, 2: 0.9, 4: 1.0, 8: 1.0}),
             "final": eval_json("final", {1: 0.7, 2: 0.95, 4: 1.0, 8: 1.0})}
    html = write_run_report(write_run(tmp_path, "sat", evals=evals)).read_text()
    assert "catches up" not in html
    assert "Both curves reach pass@k = 1 at k = 4: they meet at the ceiling" in html
    assert "both models solve every prompt within 8 samples" in html


def test_item15_wide_tables_scroll_and_raw_text_is_collapsed(tmp_path):
    page = Page("p").table([list(range(40))], header=[f"column {i}" for i in range(40)])
    text = page.details("raw JSON", '{"a": 1}').render()
    css = re.search(r"\.table-wrap \{([^}]*)\}", text).group(1)
    assert "overflow-x: auto" in css
    assert re.search(r'<div class="table-wrap"><table>\s*<tr><th>column 0</th>', text)
    assert "<details><summary>raw JSON</summary><pre>{&quot;a&quot;: 1}</pre></details>" in text  # closed: no 'open'
    html = write_run_report(write_run(tmp_path, "r")).read_text()
    assert "<details><summary>recipe.yaml (click to expand)</summary><pre>name: r" in html
    assert "<table>" not in html.replace('<div class="table-wrap"><table>', "")


def test_item15_narrative_reads_the_joint_move_of_pass1_and_passk():
    from entrolab.report.narrative import crossover_sentence, passk_sentence, training_sentence

    assert passk_sentence(0.18, 0.27, 64, 0.76, 0.61, label="final").endswith(
        "RL sharpened the distribution: more first-try successes, but fewer problems solved within 64 tries "
        "than the base model manages.")
    assert passk_sentence(0.2, 0.3, 8, 0.6, 0.7, label="f").endswith("improved both first-try accuracy and coverage at k = 8.")
    assert passk_sentence(0.2, 0.3, 8, 0.6, 0.602, label="f").startswith(
        "pass@1 rose from 0.20 to 0.30 while pass@8 stayed at 0.60 (f vs base): RL sharpened the distribution without")
    assert "cannot tell expansion from sharpening" in passk_sentence(0.5, 0.7, 8, 1.0, 1.0, label="f")
    assert passk_sentence(0.2, 0.3, 1, 0.2, 0.3, label="f") == "pass@1 rose from 0.20 to 0.30 (f vs base; no larger budget was measured)."
    # Trained above base at k = 1, 2; both 1.0 at k = 4: a tie at the ceiling, not a crossing.
    assert crossover_sentence([1, 2, 4], [0.5, 0.9, 1.0], [0.7, 0.95, 1.0], label="f").startswith(
        "Both curves reach pass@k = 1 at k = 4")
    # A tie below the ceiling: base only meets the trained curve.
    assert crossover_sentence([1, 2], [0.5, 0.8], [0.7, 0.8], label="f") == (
        "Base ties f at k = 2 and never exceeds it within the measured budgets.")
    assert crossover_sentence([1, 2], [0.5, 0.8], [0.4, 0.9], label="f") == (
        "f is not above base even at k = 1 (pass@1 0.40 vs 0.50).")
    # Steps 1..20, window 2: first (0 + 0.1)/2 = 0.05, last (0.9 + 1.0)/2 = 0.95.
    rewards = [0.0, 0.1] + [0.5] * 16 + [0.9, 1.0]
    assert training_sentence(list(range(1, 21)), rewards) == (
        "Over 20 training steps the mean reward per rollout rose from 0.05 to 0.95 (first and last 2 steps).")


def test_item15_support_needs_answer_counts(tmp_path):
    """Evals with correct counts but no 'correct_answers' cannot give a support change: say so
    instead of reporting 0 preserved / 0 expanded / 0 shrunk."""
    base, final = eval_json("base", {1: 0.5, 2: 0.75}), eval_json("final", {1: 0.5, 2: 0.75})
    for ev in (base, final):
        ev["prompts"] = [{"id": "p0", "n": 2, "correct": 1}]
    html = write_run_report(write_run(tmp_path, "noanswers", evals={"base": base, "final": final})).read_text()
    assert "Not available: the eval files count correct samples but not which answers they gave" in html
