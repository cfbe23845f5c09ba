"""Load a study's finished runs and render its tables and named values (no page I/O here)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.studies.plan import Study, is_finished, run_dir
from entrolab.studies.stats import METRICS, PairedDiff, paired_bootstrap, per_prompt
from entrolab.sweep import run_metrics

#: Steps at which training curves are tabulated (mean of the 5 steps ending there).
CURVE_STEPS = (1, 10, 25, 40, 50)


@dataclass
class StudyData:
    study: Study
    seeds: list[int]                               # seeds finished for every recipe of the study
    runs: dict[str, list[Path]]                    # recipe → run dirs, in seed order
    summary: dict[str, list[dict[str, float]]]     # recipe → per-seed numbers (eval summary + training)
    prompts: dict[str, dict[str, np.ndarray]]      # recipe → metric → [S, P] per-prompt values
    train: dict[str, list[list[dict[str, Any]]]]   # recipe → per-seed training metric lines

    @property
    def baseline(self) -> str:
        return self.study.recipes[0]


def _train_lines(rd: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if "reward/mean" in r]


def complete_seeds(root: Path, study: Study, seeds: list[int]) -> list[int]:
    """The seeds of ``seeds`` whose runs are finished for every recipe of ``study``."""
    return [s for s in seeds if all(is_finished(run_dir(root, study.setting, r, s)) for r in study.recipes)]


def load_study(root: Path, study: Study, seeds: list[int], base_eval: dict[str, Any]) -> StudyData:
    done = complete_seeds(root, study, seeds)
    if not done:
        raise ValueError(f"study '{study.name}': no seed of {seeds} has every run finished under {root}; "
                         "run `python benchmarks/results.py run` first")
    runs = {r: [run_dir(root, study.setting, r, s) for s in done] for r in study.recipes}
    summary, prompts, train = {}, {}, {}
    for r, dirs in runs.items():
        rows, pp = [], []
        for rd in dirs:
            result = json.loads((rd / "eval" / "final.json").read_text())
            per = per_prompt(result, base_eval)
            row = dict(result["summary"], **run_metrics(rd))
            row.update(expanded=float(per["expanded"].sum()), shrunk=float(per["shrunk"].sum()))
            rows.append(row)
            pp.append(per)
        summary[r] = rows
        prompts[r] = {m: np.stack([p[m] for p in pp]) for m in METRICS}
        train[r] = [_train_lines(rd) for rd in dirs]
    return StudyData(study, done, runs, summary, prompts, train)


# ----------------------------------------------------------------------------- formatting
def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def fmt_signed(x: float, digits: int = 3) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def fmt_diff(d: PairedDiff, digits: int = 3) -> str:
    text = f"{fmt_signed(d.diff, digits)} [{fmt_signed(d.lo, digits)}, {fmt_signed(d.hi, digits)}]"
    return f"**{text}**" if d.excludes_zero else text


def mean_sd(vals: list[float], digits: int = 3) -> str:
    if not vals:
        return "—"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


# ----------------------------------------------------------------------------- tables
def _kmax(sd: StudyData) -> int:
    ks = [int(k.split("@")[1]) for k in sd.summary[sd.baseline][0] if k.startswith("pass@")]
    return max(ks)


def main_table(sd: StudyData) -> str:
    """Mean ± sample std over seeds of the final evaluation and a few training numbers."""
    kmax = _kmax(sd)
    cols = [("pass@1", "pass@1", 3), ("pass@8", "pass@8", 3), (f"pass@{kmax}", f"pass@{kmax}", 3),
            ("answer_entropy", "answer H", 3), ("distinct_correct_mean", "distinct correct", 3),
            ("expanded", "expanded", 1), ("shrunk", "shrunk", 1), ("token_entropy", "token H (eval)", 3),
            ("policy/entropy", "train H (last)", 3), ("policy/clipfrac", "clip frac", 3),
            ("policy/maskfrac", "mask/select frac", 3)]
    rows = ["| method | seeds | " + " | ".join(c for _, c, _ in cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for r in sd.study.recipes:
        cells = [mean_sd([x[k] for x in sd.summary[r] if x.get(k) is not None], d) for k, _, d in cols]
        rows.append(f"| {r} | {len(sd.summary[r])} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _digits(metric: str) -> int:
    return 1 if METRICS[metric][0] == "sum" else 3


def paired(sd: StudyData, recipe: str, metric: str) -> PairedDiff:
    scale = float(sd.prompts[recipe][metric].shape[1]) if METRICS[metric][0] == "sum" else 1.0
    return paired_bootstrap(sd.prompts[recipe][metric], sd.prompts[sd.baseline][metric], scale=scale)


def paired_table(sd: StudyData) -> str:
    """Paired difference from the baseline (same seeds, same prompts) with 95 % bootstrap intervals."""
    kmax = _kmax(sd)
    labels = {**{m: lab for m, (_, lab) in METRICS.items()}, "pass@kmax": f"pass@{kmax}"}
    rows = ["| method | " + " | ".join(f"Δ {labels[m]}" for m in METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for r in sd.study.recipes[1:]:
        rows.append(f"| {r} | " + " | ".join(fmt_diff(paired(sd, r, m), _digits(m)) for m in METRICS) + " |")
    return "\n".join(rows)


def curve_value(sd: StudyData, recipe: str, key: str, step: int, window: int = 5) -> float | None:
    vals = []
    for lines in sd.train[recipe]:
        win = [x[key] for x in lines if step - window < x["step"] <= step and key in x]
        if win:
            vals.append(statistics.mean(win))
    return statistics.mean(vals) if vals else None


def curve_table(sd: StudyData, key: str) -> str:
    rows = ["| method | " + " | ".join(f"step {s}" for s in CURVE_STEPS) + " |", "|" + "---|" * (len(CURVE_STEPS) + 1)]
    for r in sd.study.recipes:
        rows.append(f"| {r} | " + " | ".join(fmt(curve_value(sd, r, key, s)) for s in CURVE_STEPS) + " |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- named values
def value(sd: StudyData, key: str) -> str:
    """One number of the study for the pages' inline markers.

    ``<recipe>/<metric>`` mean over seeds (eval summary keys such as ``pass@1``, ``answer_entropy``,
    training keys such as ``policy/entropy``, and ``expanded`` / ``shrunk``); ``.../sd`` its sample
    std; ``<recipe>/diff/<metric>`` the paired difference with its interval (metrics of
    :data:`METRICS`); ``<recipe>/curve/<training key>@<step>``; ``seeds`` the number of seeds.
    """
    if key == "seeds":
        return str(len(sd.seeds))
    recipe, _, rest = key.partition("/")
    if recipe not in sd.summary:
        raise KeyError(f"study '{sd.study.name}' has no recipe '{recipe}'")
    if rest.startswith("diff/"):
        metric = rest[len("diff/"):]
        if metric not in METRICS:
            raise KeyError(f"no paired metric '{metric}' (known: {', '.join(METRICS)})")
        return fmt_diff(paired(sd, recipe, metric), _digits(metric)).replace("**", "")
    if rest.startswith("curve/"):
        k, _, step = rest[len("curve/"):].rpartition("@")
        v = curve_value(sd, recipe, k, int(step))
        if v is None:
            raise KeyError(f"no training metric '{k}' at step {step} for '{recipe}'")
        return fmt(v)
    want_sd = rest.endswith("/sd")
    metric = rest[: -len("/sd")] if want_sd else rest
    vals = [x[metric] for x in sd.summary[recipe] if x.get(metric) is not None]
    if not vals:
        raise KeyError(f"no value '{metric}' for '{recipe}' in study '{sd.study.name}'")
    digits = 1 if metric in ("expanded", "shrunk") else 3
    if want_sd:
        return fmt(statistics.stdev(vals) if len(vals) > 1 else 0.0, digits)
    return fmt(statistics.mean(vals), digits)
