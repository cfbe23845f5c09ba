"""The run report: ``run_dir/report/index.html`` with key numbers, training plots, pass@k and recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entrolab.report.html import Page
from entrolab.report.plots import TRAINING_PANELS, line_plot, passk_bands, passk_series
from entrolab.report.rundata import RunData, load_run

#: Summary keys of an eval JSON shown in the key-numbers table, with their row names.
EVAL_ROWS = [
    ("pass@1", "pass@1"),
    ("mean@n", "mean@n (accuracy over all samples)"),
    ("greedy_acc", "greedy accuracy"),
    ("token_entropy", "token entropy (nats)"),
    ("answer_entropy", "answer entropy (nats)"),
    ("distinct_correct_mean", "distinct correct answers / prompt"),
]


def summary_value(result: dict[str, Any] | None, key: str | None) -> Any:
    """``result["summary"][key]``, or None when the result, the key or its value is missing."""
    return None if result is None or key is None else result.get("summary", {}).get(key)


def kmax(result: dict[str, Any] | None) -> int | None:
    """The largest pass@k budget of an eval result."""
    ks = passk_series(result)[0] if result else []
    return max(ks) if ks else None


def crossover_k(base: dict[str, Any], trained: dict[str, Any]) -> int | None:
    """Smallest budget k (among both results' ks) where base pass@k ≥ trained pass@k, or None.

    A trained model above the base at small k but not at large k is the "sharpens but does not
    expand" signature of Yue et al. 2025 / The Invisible Leash (arXiv:2507.14843).
    """
    b, t = dict(zip(*passk_series(base))), dict(zip(*passk_series(trained)))
    for k in sorted(set(b) & set(t)):
        if b[k] >= t[k]:
            return k
    return None


def training_plots(run: RunData, out_dir: Path) -> list[tuple[str, Path]]:
    """One PNG per training panel that has data; returns (title, path) pairs."""
    made = []
    for slug, title, keys in TRAINING_PANELS:
        lines = {k: run.series(k) for k in keys}
        bands = None
        if keys == ["reward/mean"]:
            xs, mean = lines["reward/mean"]
            sx, std = run.series("reward/std")
            if mean and sx == xs:
                bands = {"reward/mean": ([m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)])}
        path = line_plot(lines, out_dir / f"{slug}.png", title=title, bands=bands)
        if path is not None:
            made.append((title, path))
    return made


def key_numbers(run: RunData) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the key-numbers table: training finals, then base vs trained evals."""
    base, trained = run.base_eval, run.trained_eval
    header = ["metric", "base", run.trained_label or "trained"]
    rows: list[list[Any]] = [
        ["final reward/mean", None, run.last("reward/mean")],
        ["final reward/pass_rate", None, run.last("reward/pass_rate")],
        ["final policy/entropy", None, run.last("policy/entropy")],
    ]
    km = kmax(trained) or kmax(base)
    for key, name in EVAL_ROWS[:1] + ([(f"pass@{km}", f"pass@{km}")] if km and km > 1 else []) + EVAL_ROWS[1:]:
        rows.append([name, summary_value(base, key), summary_value(trained, key)])
    rows.append(["steps", None, run.num_steps])
    rows.append(["wall time (s, sum of time/step_s)", None, run.wall_time_s])
    return header, rows


def eval_table(run: RunData) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): one row per eval file, in training order."""
    header = ["label", "prompts", "n", "pass@1", "k_max", "pass@k_max", "mean@n", "greedy acc",
              "token entropy", "answer entropy", "distinct correct"]
    rows = []
    for label, res in run.ordered_evals():
        km = kmax(res)
        sv = [summary_value(res, k) for k in ("num_prompts", "pass@1", f"pass@{km}", "mean@n", "greedy_acc",
                                               "token_entropy", "answer_entropy", "distinct_correct_mean")]
        rows.append([label, sv[0], res.get("n_samples"), sv[1], km, *sv[2:]])
    return header, rows


def passk_section(page: Page, run: RunData, out_dir: Path) -> None:
    """pass@k curves of every eval (log2 k), a base-vs-trained table and the crossover note."""
    page.h2("pass@k")
    if not run.evals:
        page.para("No evaluation files in eval/.", muted=True)
        return
    lines = {label: passk_series(res) for label, res in run.ordered_evals()}
    # Bands only for base and trained, so the plot stays readable with many step evals.
    bands = {lab: b for lab in {"base", run.trained_label} if lab in run.evals
             and (b := passk_bands(run.evals[lab])) is not None}
    path = line_plot(lines, out_dir / "passk.png", title="pass@k (unbiased; 95% bootstrap band over prompts)",
                     xlabel="k", ylabel="pass@k", styles={"base": "--"}, bands=bands, log2_x=True, ylim=(0, 1.02))
    if path is not None:
        page.image(path, alt="pass@k curves")
    base, trained = run.base_eval, run.trained_eval
    if base is not None and trained is not None and run.trained_label != "base":
        b, t = dict(zip(*passk_series(base))), dict(zip(*passk_series(trained)))
        ks = sorted(set(b) & set(t))
        page.table([[k, b[k], t[k], t[k] - b[k]] for k in ks],
                   header=["k", "base", run.trained_label, "trained − base"])
        k = crossover_k(base, trained)
        page.para(f"Base catches up with {run.trained_label} at k = {k}." if k is not None
                  else f"{run.trained_label} is above base at every k measured.")


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report/index.html`` (and its PNGs) and return the HTML path.

    Works on partial runs: missing metrics keys, eval files or recipe are skipped with a note.
    """
    run = load_run(run_dir)
    out_dir = run.path / "report"
    page = Page(f"entrolab run: {run.name}")
    page.para(f"Run directory: {run.path}")
    page.h2("Key numbers")
    header, rows = key_numbers(run)
    page.table(rows, header=header)
    if run.evals:
        header, rows = eval_table(run)
        page.h3("Evaluations").table(rows, header=header)
    passk_section(page, run, out_dir)
    page.h2("Training")
    plots = training_plots(run, out_dir)
    if not plots:
        page.para("No training metrics to plot.", muted=True)
    for title, path in plots:
        page.image(path, alt=title)
    if run.notes:
        page.h2("Notes")
        for note in run.notes:
            page.para(note, muted=True)
    page.h2("Resolved recipe")
    if run.recipe_text is not None:
        page.pre(run.recipe_text)
    else:
        page.para("recipe.yaml not found.", muted=True)
    return page.write(out_dir / "index.html")
