"""Read a run directory (metrics.jsonl, eval/*.json, recipe.yaml) for the report pages.

Reading is forgiving, because reports are most wanted for runs that crashed: a missing file, a
truncated last line of metrics.jsonl or an unreadable eval file becomes a note on the page, never an
exception. Layout: docs/CONTRACTS.md "Run directory layout".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from entrolab.evaluation import load_eval

_STEP_LABEL = re.compile(r"^step_(\d+)$")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class RunData:
    """Everything the report shows about one run."""

    path: Path
    name: str
    records: list[dict[str, Any]] = field(default_factory=list)   # metrics.jsonl lines with a "step"
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> eval JSON
    recipe_text: str | None = None
    notes: list[str] = field(default_factory=list)                # what could not be read, and why

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of every record holding a finite number under ``key``."""
        xs, ys = [], []
        for r in self.records:
            y, x = _number(r.get(key)), _number(r.get("step"))
            if y is not None and x is not None:
                xs.append(x)
                ys.append(y)
        return xs, ys

    def last(self, key: str) -> float | None:
        """The value of ``key`` at the last step that logged it, or None."""
        _, ys = self.series(key)
        return ys[-1] if ys else None

    @property
    def num_steps(self) -> int | None:
        steps = [s for s in (_number(r.get("step")) for r in self.records) if s is not None]
        return int(max(steps)) if steps else None

    @property
    def wall_time_s(self) -> float | None:
        """Total training wall time: the sum of ``time/step_s`` over logged steps (None if not logged)."""
        _, ys = self.series("time/step_s")
        return sum(ys) if ys else None

    @property
    def base_eval(self) -> dict[str, Any] | None:
        return self.evals.get("base")

    @property
    def trained_label(self) -> str | None:
        """``final`` if present, else the latest ``step_XXXXXX``, else any label other than ``base``."""
        if "final" in self.evals:
            return "final"
        steps = sorted((int(m.group(1)), lab) for lab in self.evals if (m := _STEP_LABEL.match(lab)))
        if steps:
            return steps[-1][1]
        others = sorted(lab for lab in self.evals if lab != "base")
        return others[-1] if others else None

    @property
    def trained_eval(self) -> dict[str, Any] | None:
        lab = self.trained_label
        return None if lab is None else self.evals[lab]

    def ordered_evals(self) -> list[tuple[str, dict[str, Any]]]:
        """Evals in training order: base, step_* by step, others by name, final last."""
        def key(lab: str):
            if lab == "base":
                return (0, 0, lab)
            if m := _STEP_LABEL.match(lab):
                return (1, int(m.group(1)), lab)
            return (3, 0, lab) if lab == "final" else (2, 0, lab)
        return [(lab, self.evals[lab]) for lab in sorted(self.evals, key=key)]


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Lines of a metrics.jsonl that are JSON objects with a ``step``, plus notes on skipped lines."""
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
            continue
        if isinstance(obj, dict) and "step" in obj:
            records.append(obj)
        else:
            bad.append(i)
    notes = [f"{path.name}: skipped {len(bad)} unreadable line(s): {bad[:5]}"] if bad else []
    return records, notes


def load_run(run_dir: str | Path) -> RunData:
    """Read ``run_dir``; raises FileNotFoundError only if the directory itself does not exist."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    run = RunData(path=run_dir, name=run_dir.name)
    recipe = run_dir / "recipe.yaml"
    if recipe.exists():
        run.recipe_text = recipe.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(run.recipe_text)
            if isinstance(data, dict) and isinstance(data.get("name"), str) and data["name"]:
                run.name = data["name"]
        except yaml.YAMLError as err:
            run.notes.append(f"recipe.yaml is not valid YAML: {err}")
    else:
        run.notes.append("no recipe.yaml")
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        run.records, notes = read_metrics(metrics)
        run.notes.extend(notes)
    else:
        run.notes.append("no metrics.jsonl")
    for path in sorted((run_dir / "eval").glob("*.json")):
        try:
            result = load_eval(path)
        except (ValueError, OSError) as err:
            run.notes.append(f"eval file skipped: {err}")
            continue
        run.evals[str(result.get("label") or path.stem)] = result
    return run
