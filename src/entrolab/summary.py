"""The short plain-text summary ``demo`` and ``train`` print at the end (the report has the rest).

Base vs trained on the eval split: pass@1 and pass@k at the largest k both evaluations have
(pass@1 up with pass@k_max flat or down means RL sharpened; pass@k_max up means it expanded what the
model can solve), greedy accuracy, and token- and answer-level entropy in nats (docs/evaluation.md).
Without evaluations, the first and last training step's mean reward and policy entropy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{float(v):.3f}"


def eval_summary_table(base: dict[str, Any] | None, trained: dict[str, Any]) -> str:
    """Plain-text table ``metric | base | trained | change`` from two eval results (``base`` may be None).

    pass@k_max uses the largest k present in both results' ``ks``, so both columns answer the same
    question even when the two evaluations drew a different number of samples.
    """
    ks = set(trained["ks"]) & set(base["ks"]) if base is not None else set(trained["ks"])
    k_max = max(ks) if ks else None
    rows = [("pass@1", "pass@1")]
    if k_max is not None and k_max != 1:
        rows.append((f"pass@{k_max}", f"pass@{k_max}"))
    rows += [("greedy accuracy", "greedy_acc"), ("token entropy (nats)", "token_entropy"),
             ("answer entropy (nats)", "answer_entropy")]
    table = [("metric", "base", "trained", "change")]
    for name, key in rows:
        b = None if base is None else base["summary"].get(key)
        t = trained["summary"].get(key)
        change = "—" if b is None or t is None else f"{float(t) - float(b):+.3f}"
        table.append((name, _fmt(b), _fmt(t), change))
    width = [max(len(r[i]) for r in table) for i in range(4)]
    lines = [f"{r[0]:<{width[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(r[1:], width[1:])) for r in table]
    lines.insert(1, "-" * len(lines[0]))
    n = trained["summary"].get("num_prompts", len(trained.get("prompts", [])))
    head = f"{trained.get('split', 'eval')} split, {n} prompts × {trained['n_samples']} samples, " \
           f"T = {trained.get('temperature')}"
    return "\n".join([head, *lines])


def training_summary(run) -> str | None:
    """``reward/mean`` and ``policy/entropy`` at the first and last logged step of a run, or None."""
    parts = []
    for key in ("reward/mean", "policy/entropy"):
        steps, values = run.series(key)
        if values:
            parts.append(f"{key} {values[0]:.3f} (step {int(steps[0])}) → {values[-1]:.3f} (step {int(steps[-1])})")
    return "training: " + "; ".join(parts) if parts else None


def print_run_summary(run_dir: str | Path, *, base_label: str = "base", trained_label: str = "final",
                      file: TextIO | None = None) -> None:
    """Print the run's summary table (or its training summary) and where its report is."""
    from entrolab.report.rundata import load_run

    out = sys.stdout if file is None else file
    run = load_run(run_dir)
    trained = run.evals.get(trained_label)
    if trained is not None:
        print(eval_summary_table(run.evals.get(base_label), trained), file=out)
    else:
        line = training_summary(run)
        if line:
            print(line, file=out)
        print(f"(no '{trained_label}' evaluation: `entrolab train ... --eval` adds base vs trained pass@k "
              f"and the report)", file=out)
    report = run.path / "report" / "index.html"
    if report.exists():
        print(f"report: {report}", file=out)
