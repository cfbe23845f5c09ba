"""The run report: ``run_dir/report/index.html`` with a plain-language summary, key numbers,
pass@k, support change (base vs trained), training plots and the recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from entrolab.diagnostics.curves import crossover_k as _crossover
from entrolab.diagnostics.inputs import Dataset, eval_model
from entrolab.diagnostics.schema import RolloutFormatError
from entrolab.diagnostics.sections_models import support_section
from entrolab.report.agents_section import agents_section
from entrolab.diagnostics.tables import section_tables
from entrolab.report import narrative
from entrolab.report.html import Page
from entrolab.report.plots import TRAINING_PANELS, line_figure, line_plot, metric_label, passk_bands, passk_series, save_figure
from entrolab.report.rundata import RunData, load_run

#: Quantile keys of the per-rollout rewards (batch_logging) drawn as the reward plot's band.
REWARD_BAND = ("reward/q10", "reward/q90")

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


def crossover(base: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`entrolab.diagnostics.curves.crossover_k` of two eval results over their shared ks
    (None when they share none).

    A trained model above the base at small k but not at large k is the "sharpens but does not
    expand" signature of Yue et al. 2025 / The Invisible Leash (arXiv:2507.14843).
    """
    ks, b, t = _shared_curves(base, trained)
    return _crossover(ks, b, t) if ks else None


def _shared_curves(base: dict[str, Any], trained: dict[str, Any]) -> tuple[list[int], list[float], list[float]]:
    b, t = dict(zip(*passk_series(base))), dict(zip(*passk_series(trained)))
    ks = sorted(set(b) & set(t))
    return ks, [b[k] for k in ks], [t[k] for k in ks]


def kl_estimator(recipe_text: str | None) -> str | None:
    """The estimator (k1/k2/k3) of the recipe's ``kl_to_ref`` regularizer, which ``kl/ref`` logs;
    None when the recipe is missing or has no such regularizer."""
    try:
        data = yaml.safe_load(recipe_text) if recipe_text else None
    except yaml.YAMLError:
        return None
    regs = ((data or {}).get("objective") or {}).get("regularizers") if isinstance(data, dict) else None
    for reg in regs or []:
        if isinstance(reg, dict) and reg.get("name") in ("kl_to_ref", "kl"):
            return str(reg.get("estimator", "k3"))  # k3 is kl_to_ref's default
    return None


def training_figures(run: RunData) -> list[tuple[str, str, Figure]]:
    """(slug, title, figure) of every training panel that has data.

    Lines are labelled by :func:`metric_label` (the KL panel says which KL and which estimator).
    The reward band is the 10–90 % range of the step's per-rollout rewards when the run logged
    ``reward/q10``/``reward/q90``; never mean ± std, which leaves [0, 1] for a 0/1 reward.
    """
    est = kl_estimator(run.recipe_text)
    made = []
    for slug, title, ylabel, keys in TRAINING_PANELS:
        lines = {metric_label(k, kl_estimator=est): run.series(k) for k in keys}
        bands = band_labels = None
        if keys == ["reward/mean"]:
            xs, _ = run.series("reward/mean")
            (lx, lo), (hx, hi) = run.series(REWARD_BAND[0]), run.series(REWARD_BAND[1])
            if xs and lx == xs and hx == xs:
                bands = {metric_label("reward/mean"): (lo, hi)}
                band_labels = {metric_label("reward/mean"): "10–90 % of the step's rollout rewards [reward/q10, q90]"}
                title += " (band: 10–90 % of rollouts)"
        fig = line_figure(lines, title=title, ylabel=ylabel, bands=bands, band_labels=band_labels)
        if fig is not None:
            made.append((slug, title, fig))
    return made


def training_plots(run: RunData, out_dir: Path) -> list[tuple[str, Path]]:
    """One PNG per training panel that has data; returns (title, path) pairs."""
    return [(title, save_figure(fig, out_dir / f"{slug}.png")) for slug, title, fig in training_figures(run)]


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
    rows += [[name, None, value] for name, value in memory_setup(run.recipe_text)]
    return header, rows


def memory_setup(recipe_text: str | None) -> list[tuple[str, str]]:
    """Key-number rows for the run's engine, parameter and memory choices (``rollout.engine``,
    ``model.dtype``, ``model.lora``, ``train.gradient_checkpointing``, ``train.logprob_chunk_size``)
    from the resolved recipe; none when it is missing."""
    try:
        data = yaml.safe_load(recipe_text) if recipe_text else None
    except yaml.YAMLError:
        return []
    if not isinstance(data, dict):
        return []
    lora = (data.get("model") or {}).get("lora")
    tuning = ("full fine-tuning" if not isinstance(lora, dict) else
              f"LoRA r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
              f"modules={lora.get('target_modules')}")
    train = data.get("train") or {}
    ckpt = bool(train.get("gradient_checkpointing", False))
    return [("rollout engine", str((data.get("rollout") or {}).get("engine", "builtin"))),
            ("model dtype", str((data.get("model") or {}).get("dtype", "auto"))),
            ("fine-tuning", tuning), ("gradient checkpointing", "on" if ckpt else "off"),
            ("log-prob chunk size", str(train.get("logprob_chunk_size", 0)))]


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
                     xlabel="k (samples per prompt)", ylabel="pass@k (fraction of prompts solved)",
                     styles={"base": "--"}, bands=bands, log2_x=True, ylim=(0, 1.02))
    if path is not None:
        page.image(path, alt="pass@k curves")
    base, trained = run.base_eval, run.trained_eval
    if base is not None and trained is not None and run.trained_label != "base":
        ks, b, t = _shared_curves(base, trained)
        page.table([[k, bk, tk, tk - bk] for k, bk, tk in zip(ks, b, t)],
                   header=["k", "base", run.trained_label, "trained − base"])
        sentence = narrative.crossover_sentence(ks, b, t, label=run.trained_label)
        if sentence:
            page.para(sentence)


def support_result(run: RunData) -> tuple[dict[str, Any] | None, str | None]:
    """The diagnostics support section (Invisible Leash) of base vs trained eval, or (None, why)."""
    base, trained, label = run.base_eval, run.trained_eval, run.trained_label
    if base is None or trained is None or label == "base":
        return None, "needs eval/base.json and a trained eval (final or step_*)"
    try:
        models = [eval_model(base, where="eval/base.json", run="base"),
                  eval_model(trained, where=f"eval/{label}.json", run=label)]
    except RolloutFormatError as err:
        return None, f"eval files lack per-prompt answer counts: {err}"
    if any(g.c > 0 and not g.correct_counts for m in models for g in m.groups.values()):
        return None, "the eval files count correct samples but not which answers they gave ('correct_answers')"
    data = Dataset(models={(m.run, 0): m for m in models})
    result, _ = support_section(data, "base")
    comp = (result.get("comparisons") or {}).get(label, {})
    if "error" in comp:
        return None, f"{label} {comp['error']}"
    return result, None


def support_part(page: Page, result: dict[str, Any] | None, why: str | None, out_dir: Path) -> None:
    """Support change: preserved / expanded / shrunk correct answers, SRR, NDR, coverage."""
    # Imported here: diagnostics.figures draws with report.plots, whose package imports this module.
    from entrolab.diagnostics.figures import support_figure

    page.h2("Support change (base vs trained)")
    page.para("A model's empirical support on a prompt is the set of distinct correct answers among its "
              "samples. Preserved: found by both; expanded: only after RL; shrunk: only by the base model. "
              "SRR = P/(P+S) (support retained), NDR = E/(P+E) (new discoveries), NSCR = (E−S)/(P+E+S); "
              "coverage = found / all solutions of an enumerable task (\"The Invisible Leash\", arXiv 2507.14843).",
              muted=True)
    if result is None:
        page.para(f"Not available: {why}.", muted=True)
        return
    for png in support_figure(result, out_dir / "support"):
        page.image(png, alt="support change bars")
    for header, rows in section_tables("support", result):
        page.table(rows, header=header)
    for comp in (result.get("comparisons") or {}).values():
        if comp.get("warning"):
            page.para(comp["warning"], muted=True)


def summary_sentences(run: RunData, support: dict[str, Any] | None) -> list[str]:
    """The "What happened" paragraph: training reward, pass@1 vs pass@k_max, crossover, support, entropy."""
    out = []
    xs, reward = run.series("reward/mean")
    px, rate = run.series("reward/pass_rate")
    out.append(narrative.training_sentence(xs, reward, rate if px == xs else None))
    base, trained, label = run.base_eval, run.trained_eval, run.trained_label
    if base is not None and trained is not None and label != "base":
        ks, b, t = _shared_curves(base, trained)
        if ks:
            out.append(narrative.passk_sentence(b[0], t[0], ks[-1], b[-1], t[-1], label=label))
            out.append(narrative.crossover_sentence(ks, b, t, label=label))
        out.append(narrative.entropy_sentence(base.get("summary", {}), trained.get("summary", {}), label=label))
    if support is not None:
        comp = (support.get("comparisons") or {}).get(label)
        if comp:
            out.append(narrative.support_sentence(comp, label=label))
    return [s for s in out if s]


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report/index.html`` (and its PNGs) and return the HTML path.

    Works on partial runs: missing metrics keys, eval files or recipe are skipped with a note.
    """
    run = load_run(run_dir)
    out_dir = run.path / "report"
    support, why = support_result(run)
    page = Page(f"entrolab run: {run.name}")
    page.para(f"Run directory: {run.path}")
    page.h2("What happened")
    sentences = summary_sentences(run, support)
    for sentence in sentences:
        page.para(sentence)
    if not sentences:
        page.para("No training metrics or evaluations to summarise.", muted=True)
    page.h2("Key numbers")
    header, rows = key_numbers(run)
    page.table(rows, header=header)
    if run.evals:
        header, rows = eval_table(run)
        page.h3("Evaluations").table(rows, header=header)
    passk_section(page, run, out_dir)
    if run.base_eval is not None and run.trained_eval is not None:
        support_part(page, support, why, out_dir)
    agents_section(page, run, out_dir)  # multi-turn runs only
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
        page.details("recipe.yaml (click to expand)", run.recipe_text)
    else:
        page.para("recipe.yaml not found.", muted=True)
    return page.write(out_dir / "index.html")
