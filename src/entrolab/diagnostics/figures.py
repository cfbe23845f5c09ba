"""Figures of the diagnostics report (matplotlib object API, Agg; never pyplot's global state).

Simple line plots reuse :func:`entrolab.report.plots.line_plot`; the support stacked bars, the
covariance histograms, the law-fit extrapolation, grouped bars (entropy per model, policy cliff,
preference consistency) and the STARC heat map are drawn here. Every function takes a
section's JSON result and returns the written PNG paths (empty when there is nothing to draw).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from entrolab.report.plots import line_plot


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def passk_figure(section: dict, out: Path) -> list[Path]:
    """pass@k curves (log2 k) with their bootstrap bands."""
    curves = section["curves"]
    lines = {m: (c["ks"], c["pass_at_k"]) for m, c in curves.items()}
    bands = {m: (c["lo"], c["hi"]) for m, c in curves.items()}
    p = line_plot(lines, out / "passk.png", title=f"pass@k ({100 * (1 - section['alpha']):.0f}% bootstrap bands)",
                  xlabel="k (samples per prompt)", ylabel="pass@k (fraction of prompts)", bands=bands, log2_x=True)
    return [p] if p else []


def support_figure(section: dict, out: Path) -> list[Path]:
    """Stacked bars of preserved / expanded / shrunk correct answers per difficulty, per model."""
    paths = []
    for label, comp in (section.get("comparisons") or {}).items():
        by = comp.get("by_difficulty") or {}
        if not by:
            continue
        diffs = list(by)
        fig = Figure(figsize=(max(4.0, 1.2 * len(diffs) + 2), 3.6), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        bottom = [0.0] * len(diffs)
        for key, color in (("preserved", "#4c72b0"), ("expanded", "#55a868"), ("shrunk", "#c44e52")):
            vals = [by[d][key] for d in diffs]
            ax.bar(range(len(diffs)), vals, bottom=bottom, color=color, label=key)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(diffs)))
        ax.set_xticklabels(diffs)
        ax.set_xlabel("difficulty")
        ax.set_ylabel("correct answers (prompt, answer)")
        ax.set_title(f"support change: base → {label}")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"support_{len(paths)}.png"))
    return paths


def entropy_figure(section: dict, out: Path) -> list[Path]:
    """Token entropy over steps per run (band: 10–90% of per-sample entropies) and answer entropy."""
    lines, bands, ans = {}, {}, {}
    for run, rows in section["runs"].items():
        tok = [r for r in rows if r.get("token_entropy") is not None]
        if tok:
            lines[run] = ([r["step"] for r in tok], [r["token_entropy"] for r in tok])
            dist = [r for r in tok if "sample_entropy" in r and "q10" in r["sample_entropy"]]
            if len(dist) == len(tok):
                bands[run] = ([r["sample_entropy"]["q10"] for r in dist], [r["sample_entropy"]["q90"] for r in dist])
        a = [r for r in rows if r.get("answer_entropy") is not None]
        if a:
            ans[run] = ([r["step"] for r in a], [r["answer_entropy"] for r in a])
    paths = [line_plot(lines, out / "entropy_token.png", title="token entropy over steps", ylabel="entropy per token (nats)", bands=bands),
             line_plot(ans, out / "entropy_answer.png", title="answer-level entropy over steps", ylabel="answer entropy (nats)")]
    return [p for p in paths if p]


def covariance_figure(section: dict, out: Path, *, max_steps: int = 4) -> list[Path]:
    """Histograms of the per-token covariance at up to ``max_steps`` evenly spaced steps per run."""
    paths = []
    for run, res in section["runs"].items():
        rows = res["steps"]
        if not rows:
            continue
        pick = sorted({round(i * (len(rows) - 1) / max(1, max_steps - 1)) for i in range(min(max_steps, len(rows)))})
        fig = Figure(figsize=(6.0, 3.6), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        for i in pick:
            r = rows[i]
            edges, counts = r["hist_edges"], r["hist_counts"]
            total = max(1, sum(counts))
            ax.stairs([c / total for c in counts], edges, label=f"step {r['step']} (mean {r['cov_mean']:.3g})")
        ax.set_yscale("log")
        ax.set_xlabel("(logp − mean)(A − mean) per token")
        ax.set_ylabel("fraction of tokens")
        ax.set_title(f"log-prob/advantage covariance: {run}")
        ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"covariance_{len(paths)}.png"))
    return paths


def law_figure(section: dict, out: Path) -> list[Path]:
    """Performance vs entropy per run: fitted and held-out points, the fit extrapolated to H = 0."""
    paths = []
    for run, res in section["runs"].items():
        fit = res["fit"]
        if "a" not in fit:
            continue
        H, R, n = res["entropy"], res["performance_values"], fit["n_fit"]
        fig = Figure(figsize=(6.0, 3.6), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(H[:n], R[:n], "o", ms=4, label="fitted steps")
        if n < len(H):
            ax.plot(H[n:], R[n:], "x", ms=5, label="held-out later steps")
        hmax = max(H)
        xs = [hmax * i / 100 for i in range(101)]
        ax.plot(xs, [-fit["a"] * math.exp(h) + fit["b"] for h in xs], "-", lw=1,
                label=f"R = −{fit['a']:.3g}·exp(H) + {fit['b']:.3g}")
        ax.plot([0.0], [fit["ceiling"]], "*", ms=10, label=f"ceiling b − a = {fit['ceiling']:.3g}")
        ax.set_xlabel("token entropy H (nats)")
        ax.set_ylabel(res["performance"][:40])
        ax.set_title(f"entropy–performance law: {run}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"law_{len(paths)}.png"))
    return paths


def steps_figure(section: dict, out: Path, *, keys: list[str], name: str, title: str, ylabel: str) -> list[Path]:
    """One line per (run, key) over steps, for per-step statistic rows (discriminator, clipping)."""
    lines = {}
    for run, rows in section["runs"].items():
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
            if pts:
                lines[f"{run}: {key}"] = ([p[0] for p in pts], [p[1] for p in pts])
    p = line_plot(lines, out / f"{name}.png", title=title, ylabel=ylabel)
    return [p] if p else []


def rank_figure(section: dict, out: Path) -> list[Path]:
    """Mean ER, ERV, ERA over steps per run (one panel per statistic)."""
    paths = []
    for key in ("er", "erv", "era"):
        lines = {run: ([r["step"] for r in res[key]], [r["mean"] for r in res[key]])
                 for run, res in section["runs"].items() if key in res}
        p = line_plot(lines, out / f"rank_{key}.png", title=f"hidden-state {key.upper()} over steps",
                      ylabel=f"{key.upper()} (effective dimensions)" if key == "er" else f"{key.upper()} (per step)")
        if p:
            paths.append(p)
    return paths


def bon_figure(section: dict, out: Path) -> list[Path]:
    """Reward vs KL: best-of-N, the KL-optimal tilt at the same KL, and the trained models."""
    rows = section["curve"]
    lines = {
        "best-of-N": ([r["kl_exact_mean"] for r in rows], [r["bon_reward"] for r in rows]),
        "tilted (KL-RL optimum)": ([r["kl_exact_mean"] for r in rows], [r["tilted_reward_at_exact_kl"] for r in rows]),
    }
    for label, t in section.get("trained", {}).items():
        if t.get("answer_kl_mean") is not None and t.get("reward_mean") is not None:
            lines[f"{label} (answer-level KL)"] = ([t["answer_kl_mean"]], [t["reward_mean"]])
    p = line_plot(lines, out / "bon_kl.png", title="reward vs KL to the base model", xlabel="KL (nats)", ylabel="expected reward")
    return [p] if p else []


def _bars(groups: dict[str, dict[str, float | None]], path: Path, *, title: str, ylabel: str) -> Path | None:
    """Grouped bars: one group per outer key, one bar per inner key (None / NaN values left out)."""
    keys = list(dict.fromkeys(k for g in groups.values() for k in g))
    if not groups or not keys:
        return None
    width = 0.8 / len(keys)
    fig = Figure(figsize=(max(4.5, 1.4 * len(groups) * max(1, len(keys)) ** 0.5 + 2), 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for j, key in enumerate(keys):
        xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(groups))]
        ys = [g.get(key) for g in groups.values()]
        keep = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float)) and math.isfinite(y)]
        if keep:
            ax.bar([x for x, _ in keep], [y for _, y in keep], width=width, label=key)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def answer_entropy_figure(section: dict, out: Path) -> list[Path]:
    """Answer entropy (all / parsed / correct answers) and token entropy per model."""
    keys = ("answer_entropy", "answer_entropy_parsed", "correct_answer_entropy", "token_entropy")
    groups = {m: {k: v.get(k) for k in keys} for m, v in section["models"].items()}
    p = _bars(groups, out / "answer_entropy.png", title="entropy per model (final step)", ylabel="nats")
    return [p] if p else []


def cliff_figure(section: dict, out: Path) -> list[Path]:
    """Mean and max TV between the δ = 0 run and each perturbed run (TV per unit δ in the label), next
    to the sampling-noise floor (the TV expected between two samples of one policy)."""
    groups = {f"{run}\nδ={r['delta']:g}, TV/δ={r['tv_per_delta']:.3g}":
              {"TV mean": r["tv_mean"], "TV max": r["tv_max"],
               **({"noise floor": r["tv_floor_mean"]} if r.get("tv_floor_mean") is not None else {})}
              for run, r in section["runs"].items()}
    p = _bars(groups, out / "cliff.png", title=f"policy cliff: answer-distribution TV to {section['reference']}",
              ylabel="total variation")
    return [p] if p else []


def starc_figure(section: dict, out: Path) -> list[Path]:
    """Heat map of pairwise STARC distances (0 = same reward up to shaping and positive scale, max 2)."""
    names = section["reward_functions"]
    dist = section["distances"]
    M = [[0.0 if a == b else dist.get(f"{a} vs {b}", dist.get(f"{b} vs {a}")) for b in names] for a in names]
    M = [[math.nan if v is None else v for v in row] for row in M]
    fig = Figure(figsize=(1.0 * len(names) + 2.5, 0.8 * len(names) + 1.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(M, vmin=0.0, vmax=2.0, cmap="viridis")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    for i, row in enumerate(M):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 1.0 else "k")
    fig.colorbar(im, ax=ax)
    ax.set_title("STARC distance between reward functions")
    return [_save(fig, out / "starc.png")]


def preference_figure(section: dict, out: Path) -> list[Path]:
    """Cycle rate, share of uncertain pairs and mean disagreement entropy across the reward functions."""
    keys = ("cycle_rate", "uncertain_frac_mean", "disagreement_entropy_bits_mean")
    p = _bars({", ".join(section["reward_functions"]): {k: section.get(k) for k in keys}},
              out / "preference.png", title="preference consistency", ylabel="rate / bits")
    return [p] if p else []
