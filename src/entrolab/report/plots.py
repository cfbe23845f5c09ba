"""Matplotlib plots for run reports: training curves over steps and pass@k curves.

Figures are built with the object-oriented API (``matplotlib.figure.Figure`` + ``savefig``), which
renders with the Agg backend and never touches pyplot's global state, so nothing is shown and
nothing leaks between plots or threads.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from entrolab.diagnostics.passk import bootstrap_passk

#: Training panels: (file slug, title, y-axis label with units, [metric keys drawn in the panel]);
#: see CONTRACTS.md keys. Every panel names its unit so a reader never guesses nats vs bits or
#: fraction vs percent.
TRAINING_PANELS: list[tuple[str, str, str, list[str]]] = [
    ("reward", "Reward (training rollouts)", "reward per rollout (recipe's scale)", ["reward/mean"]),
    ("pass_rate", "Pass rate (training rollouts)", "fraction of rollouts correct", ["reward/pass_rate"]),
    ("entropy", "Policy token entropy", "entropy per token (nats)", ["policy/entropy"]),
    ("kl", "KL divergences (per token)", "KL per token (nats)", ["policy/approx_kl", "kl/ref", "kl/ref_k1"]),
    ("clipfrac", "Clip fractions", "fraction of valid tokens", ["policy/clipfrac_low", "policy/clipfrac_high"]),
    ("length", "Response length", "response length (tokens)", ["rollout/len_mean", "rollout/len_max"]),
    ("eval", "Evaluation during training", "fraction correct", ["eval/pass@1", "eval/mean@n", "eval/greedy_acc"]),
]

#: Legend text per metric key: what the number is, so a curve is readable without CONTRACTS.md.
#: ``kl/ref`` is filled in by :func:`metric_label` with the estimator the run's recipe used.
METRIC_LABELS: dict[str, str] = {
    "reward/mean": "mean reward over the step's rollouts",
    "reward/pass_rate": "fraction of the step's rollouts verified correct",
    "policy/entropy": "mean token entropy at sampling (nats)",
    # Schulman's k3 on the update's own samples: how far one step moved the policy (trust region).
    "policy/approx_kl": "k3 estimate of KL(π_old‖π_θ), old → updated policy",
    "kl/ref_k1": "k1 estimate of KL(π_old‖π_ref), sampling policy → reference",
    "policy/clipfrac_low": "clipped below (ratio < 1 − ε_low)",
    "policy/clipfrac_high": "clipped above (ratio > 1 + ε_high)",
    "rollout/len_mean": "mean response length",
    "rollout/len_max": "longest response",
    "eval/pass@1": "eval pass@1",
    "eval/mean@n": "eval mean@n (accuracy over all samples)",
    "eval/greedy_acc": "eval greedy accuracy",
}


def metric_label(key: str, *, kl_estimator: str | None = None) -> str:
    """Legend text for a metric key: ``"<meaning> [key]"``.

    ``kl/ref`` is the ``kl_to_ref`` regularizer's estimate of KL(π_θ‖π_ref) on the update's
    tokens; its estimator (k1/k2/k3, Schulman 2020) comes from the recipe, unknown when None.
    """
    if key == "kl/ref":
        est = f"{kl_estimator} estimate" if kl_estimator else "estimate"
        text = f"{est} of KL(π_θ‖π_ref), policy → reference"
    else:
        text = METRIC_LABELS.get(key, key)
    return f"{text} [{key}]"


Series = tuple[Sequence[float], Sequence[float]]


def line_figure(lines: dict[str, Series], *, title: str, ylabel: str, xlabel: str = "step",
                bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                styles: dict[str, str] | None = None, log2_x: bool = False,
                ylim: tuple[float, float] | None = None, band_labels: dict[str, str] | None = None) -> Figure | None:
    """Draw ``{label: (xs, ys)}`` as lines on a new Figure; None if every series is empty.

    Args:
        lines: label -> (x values, y values); empty series are left out. Labels become the legend,
            which is always drawn (a single curve still says what it is).
        title, xlabel: axis text.
        ylabel: y-axis label, required and non-empty: it carries the unit (nats, fraction, tokens).
        bands: label -> (lower ys, upper ys) shaded around that line (quantiles, bootstrap bands).
        styles: label -> matplotlib line style (``"--"`` for base-model curves).
        log2_x: log base-2 x axis with integer tick labels (for pass@k budgets).
        ylim: fixed y range (e.g. (0, 1) for probabilities); default autoscale.
        band_labels: label -> legend text of that line's band (unlabelled bands stay out of the legend).
    """
    if not ylabel:
        raise ValueError(f"plot '{title}' needs a y-axis label with its unit")
    lines = {k: v for k, v in lines.items() if len(v[0]) > 0}
    if not lines:
        return None
    fig = Figure(figsize=(6.4, 3.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for label, (xs, ys) in lines.items():
        marker = "o" if len(xs) < 30 else None
        (ln,) = ax.plot(list(xs), list(ys), (styles or {}).get(label, "-"), marker=marker, ms=3, label=label)
        if bands and label in bands:
            lo, hi = bands[label]
            ax.fill_between(list(xs), list(lo), list(hi), color=ln.get_color(), alpha=0.15, linewidth=0,
                            label=(band_labels or {}).get(label, "_nolegend_"))
    if log2_x:
        ax.set_xscale("log", base=2)
        ticks = sorted({x for xs, _ in lines.values() for x in xs})
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{int(t)}" for t in ticks])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title("\n".join(textwrap.wrap(title, 72)), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def line_plot(lines: dict[str, Series], path: str | Path, *, title: str, ylabel: str, xlabel: str = "step",
              bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
              styles: dict[str, str] | None = None, log2_x: bool = False,
              ylim: tuple[float, float] | None = None) -> Path | None:
    """:func:`line_figure` saved as a PNG at ``path``; None (no file) if every series is empty."""
    fig = line_figure(lines, title=title, ylabel=ylabel, xlabel=xlabel, bands=bands, styles=styles,
                      log2_x=log2_x, ylim=ylim)
    return None if fig is None else save_figure(fig, path)


def passk_bands(result: dict, *, n_boot: int = 500, seed: int = 0) -> tuple[list[float], list[float]] | None:
    """95% bootstrap band over prompts of an eval's pass@k curve, from its per-prompt counts.

    None when the eval JSON holds no per-prompt records. Uses
    :func:`entrolab.diagnostics.passk.bootstrap_passk` on the (n, correct) of each prompt.
    """
    prompts = result.get("prompts") or []
    ks = passk_series(result)[0]
    if not prompts or not ks:
        return None
    band = bootstrap_passk([p["n"] for p in prompts], [p["correct"] for p in prompts], ks,
                           n_boot=n_boot, seed=seed)
    return [band[k][0] for k in ks], [band[k][1] for k in ks]


def passk_series(result: dict) -> Series:
    """(ks, pass@k values) of an eval JSON's summary, for the ks it lists."""
    summary = result.get("summary", {})
    ks = [k for k in result.get("ks", []) if summary.get(f"pass@{k}") is not None]
    return ks, [summary[f"pass@{k}"] for k in ks]
