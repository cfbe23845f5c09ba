"""One page comparing several runs: a row per run and overlaid training and pass@k curves."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from entrolab.report.html import Page
from entrolab.report.plots import TRAINING_PANELS, line_plot, metric_label, passk_series
from entrolab.report.run_report import kl_estimator, kmax, summary_value
from entrolab.report.rundata import RunData, load_run

HEADER = ["run", "steps", "final reward", "final pass rate", "final entropy", "base pass@1",
          "pass@1", "k_max", "base pass@k_max", "pass@k_max", "greedy acc", "token entropy",
          "answer entropy", "distinct correct", "wall time (s)"]


def _unique_names(runs: list[RunData]) -> list[str]:
    """Run names, made unique by appending the directory when two runs share a name."""
    names = [r.name for r in runs]
    return [f"{n} ({r.path})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def comparison_row(name: str, run: RunData) -> list:
    """One table row (see ``HEADER``): training finals, then trained (and base) eval numbers."""
    base, trained = run.base_eval, run.trained_eval
    km = kmax(trained)
    sv = summary_value
    pk = f"pass@{km}" if km else None
    return [name, run.num_steps, run.last("reward/mean"), run.last("reward/pass_rate"),
            run.last("policy/entropy"), sv(base, "pass@1"), sv(trained, "pass@1"), km, sv(base, pk),
            sv(trained, pk), sv(trained, "greedy_acc"), sv(trained, "token_entropy"),
            sv(trained, "answer_entropy"), sv(trained, "distinct_correct_mean"), run.wall_time_s]


def write_comparison(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` (and PNGs) comparing ``run_dirs``; return the HTML path.

    Training metrics are overlaid one metric key per plot (a line per run); pass@k plots each run's
    trained eval (solid) and base eval (dashed) on a log2 k axis.
    """
    if not run_dirs:
        raise ValueError("write_comparison needs at least one run directory")
    out_dir = Path(out_dir)
    runs = [load_run(d) for d in run_dirs]
    names = _unique_names(runs)
    page = Page(f"entrolab comparison of {len(runs)} runs")
    page.h2("Runs")
    page.table([comparison_row(n, r) for n, r in zip(names, runs)], header=HEADER)
    page.para("Eval columns use each run's trained eval (final, else latest step); 'base' columns "
              "its base eval; k_max is the largest budget of the trained eval.", muted=True)

    page.h2("pass@k")
    lines, styles = {}, {}
    for n, r in zip(names, runs):
        if r.trained_eval is not None:
            lines[f"{n}: {r.trained_label}"] = passk_series(r.trained_eval)
        if r.base_eval is not None:
            lines[f"{n}: base"] = passk_series(r.base_eval)
            styles[f"{n}: base"] = "--"
    path = line_plot(lines, out_dir / "passk.png", title="pass@k", xlabel="k (samples per prompt)",
                     ylabel="pass@k (fraction of prompts solved)",
                     styles=styles, log2_x=True, ylim=(0, 1.02))
    if path is not None:
        page.image(path, alt="pass@k")
    else:
        page.para("No run has evaluation files.", muted=True)

    page.h2("Training")
    plotted = 0
    for slug, title, ylabel, keys in TRAINING_PANELS:
        for key in keys:
            # kl/ref's estimator is a recipe choice, so each run's line says which one it logged.
            per_run = {(f"{n} ({kl_estimator(r.recipe_text) or '?'} estimator)" if key == "kl/ref" else n): r.series(key)
                       for n, r in zip(names, runs)}
            fname = f"{slug}_{key.replace('/', '_').replace('@', 'at')}.png"
            path = line_plot(per_run, out_dir / fname, title=f"{title}: {metric_label(key)}", ylabel=ylabel)
            if path is not None:
                page.image(path, alt=key)
                plotted += 1
    if not plotted:
        page.para("No training metrics to plot.", muted=True)
    notes = [f"{n}: {note}" for n, r in zip(names, runs) for note in r.notes]
    if notes:
        page.h2("Notes")
        for note in notes:
            page.para(note, muted=True)
    return page.write(out_dir / "index.html")
