"""Matplotlib plots for run reports: training curves over steps and pass@k curves.

Figures are built with the object-oriented API (``matplotlib.figure.Figure`` + ``savefig``), which
renders with the Agg backend and never touches pyplot's global state, so nothing is shown and
nothing leaks between plots or threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from entrolab.diagnostics.passk import bootstrap_passk

#: Training panels: (file slug, title, [metric keys drawn in the panel]); see CONTRACTS.md keys.
TRAINING_PANELS: list[tuple[str, str, list[str]]] = [
    ("reward", "Reward (mean over rollouts)", ["reward/mean"]),
    ("pass_rate", "Pass rate (training rollouts)", ["reward/pass_rate"]),
    ("entropy", "Policy token entropy", ["policy/entropy"]),
    ("kl", "KL", ["policy/approx_kl", "kl/ref"]),
    ("clipfrac", "Clip fractions", ["policy/clipfrac_low", "policy/clipfrac_high"]),
    ("length", "Response length (tokens)", ["rollout/len_mean", "rollout/len_max"]),
    ("eval", "Evaluation during training", ["eval/pass@1", "eval/mean@n", "eval/greedy_acc"]),
]

Series = tuple[Sequence[float], Sequence[float]]


def line_plot(lines: dict[str, Series], path: str | Path, *, title: str, xlabel: str = "step",
              ylabel: str = "", bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
              styles: dict[str, str] | None = None, log2_x: bool = False,
              ylim: tuple[float, float] | None = None) -> Path | None:
    """Draw ``{label: (xs, ys)}`` as lines into a PNG at ``path``; None (no file) if every series is empty.

    Args:
        lines: label -> (x values, y values); empty series are left out.
        path: output PNG path (parents created).
        title, xlabel, ylabel: axis text.
        bands: label -> (lower ys, upper ys) shaded around that line (e.g. mean ± std).
        styles: label -> matplotlib line style (``"--"`` for base-model curves).
        log2_x: log base-2 x axis with integer tick labels (for pass@k budgets).
        ylim: fixed y range (e.g. (0, 1) for probabilities); default autoscale.
    """
    lines = {k: v for k, v in lines.items() if len(v[0]) > 0}
    if not lines:
        return None
    fig = Figure(figsize=(6.0, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for label, (xs, ys) in lines.items():
        marker = "o" if len(xs) < 30 else None
        (ln,) = ax.plot(list(xs), list(ys), (styles or {}).get(label, "-"), marker=marker, ms=3, label=label)
        if bands and label in bands:
            lo, hi = bands[label]
            ax.fill_between(list(xs), list(lo), list(hi), color=ln.get_color(), alpha=0.2, linewidth=0)
    if log2_x:
        ax.set_xscale("log", base=2)
        ticks = sorted({x for xs, _ in lines.values() for x in xs})
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{int(t)}" for t in ticks])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if len(lines) > 1 or bands:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


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
