"""The run report's "Episodes" section for multi-turn agent runs (docs/agents.md, Diagnostics).

Shown only when the run logged ``agent/*`` metrics or its evaluations carry ``episode_*`` keys: one
table row per evaluation (success, return, turns, tool calls, malformed turns, budget stops, entropy
per turn) and two training panels (episode outcomes; the policy's entropy turn by turn).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from entrolab.report.html import Page
from entrolab.report.plots import line_figure, save_figure
from entrolab.report.rundata import RunData

_TURN = re.compile(r"^(?:agent/|episode_)entropy_turn(\d+)$")
#: (summary key without the ``episode_`` prefix, column header)
COLUMNS = [("success", "success"), ("return", "return"), ("turns", "turns"), ("tool_calls", "tool calls"),
           ("malformed", "malformed turns"), ("turn_budget_frac", "turn budget hit"),
           ("token_budget_frac", "token budget hit")]


def _turns(keys) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := _TURN.match(k))})


def has_episodes(run: RunData) -> bool:
    return any("agent/success" in r for r in run.records) or any(
        "episode_success" in (res.get("summary") or {}) for res in run.evals.values())


def episode_table(run: RunData) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): the episode statistics of each evaluation, in training order."""
    evals = run.ordered_evals()
    turns = _turns(k for _, res in evals for k in (res.get("summary") or {}))
    header = ["label"] + [h for _, h in COLUMNS] + [f"H turn {k}" for k in turns]
    rows = []
    for label, res in evals:
        s = res.get("summary") or {}
        if "episode_success" not in s:
            continue
        rows.append([label] + [s.get(f"episode_{k}") for k, _ in COLUMNS] + [s.get(f"episode_entropy_turn{k}")
                                                                              for k in turns])
    return header, rows


def agents_section(page: Page, run: RunData, out_dir: Path) -> None:
    """Append the Episodes section to ``page`` (nothing for a single-turn run)."""
    if not has_episodes(run):
        return
    page.h2("Episodes")
    page.para("Multi-turn episodes: success rate, episode return, model turns, well-formed tool calls and "
              "malformed turns per episode, the share of episodes a budget ended, and the mean entropy of the "
              "model's tokens in each turn (environment tokens excluded).")
    header, rows = episode_table(run)
    if rows:
        page.h3("Evaluations").table(rows, header=header)
    panels = [("episodes", "Episodes per training step", "per episode",
               {k: run.series(f"agent/{k}") for k in ("success", "turns", "tool_calls", "malformed")}),
              ("turn_entropy", "Entropy of the model's tokens by turn", "entropy (nats)",
               {f"turn {k}": run.series(f"agent/entropy_turn{k}")
                for k in _turns(key for r in run.records for key in r)})]
    for slug, title, ylabel, lines in panels:
        fig = line_figure(lines, title=title, ylabel=ylabel)
        if fig is not None:
            page.image(save_figure(fig, out_dir / f"{slug}.png"), alt=title)
