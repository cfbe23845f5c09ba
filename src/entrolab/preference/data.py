"""Preference pairs: the in-memory type and the JSONL loader (Parquet and HF ``datasets`` next).

One row: ``{"prompt": str, "chosen": str, "rejected": str}`` plus optional ``"label"`` (soft label,
P(chosen ≻ rejected) in [0, 1], default 1) and ``"chosen_score"`` / ``"rejected_score"`` (floats,
e.g. the verifier's or a reward model's scores the pair was built from).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    label: float = 1.0
    chosen_score: float | None = None
    rejected_score: float | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def pair_from_row(row: Any, where: str) -> PreferencePair:
    """Validate one row; errors name ``where`` (``file:line``)."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(row.get(key), str):
            raise ValueError(f"{where}: '{key}' must be a string, got {row.get(key)!r:.60}")
    if row["chosen"] == row["rejected"]:
        raise ValueError(f"{where}: chosen and rejected responses are identical")
    label = row.get("label", 1.0)
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not 0.0 <= float(label) <= 1.0:
        raise ValueError(f"{where}: 'label' must be a number in [0, 1], got {label!r}")
    scores = {}
    for key in ("chosen_score", "rejected_score"):
        v = row.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"{where}: '{key}' must be a finite number, got {v!r}")
        scores[key] = None if v is None else float(v)
    meta = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected", "label", *scores)}
    return PreferencePair(row["prompt"], row["chosen"], row["rejected"], float(label), meta=meta, **scores)


def load_preferences(path: str | Path) -> list[PreferencePair]:
    """Pairs from a JSONL file (one object per line; blank lines skipped)."""
    p = Path(path)
    pairs = []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}:{i}: not valid JSON ({err.msg})") from None
            pairs.append(pair_from_row(row, f"{p}:{i}"))
    if not pairs:
        raise ValueError(f"{p}: no preference pairs")
    return pairs


def write_preferences(pairs: list[PreferencePair], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        for x in pairs:
            row = {"prompt": x.prompt, "chosen": x.chosen, "rejected": x.rejected, "label": x.label}
            if x.chosen_score is not None:
                row["chosen_score"] = x.chosen_score
            if x.rejected_score is not None:
                row["rejected_score"] = x.rejected_score
            f.write(json.dumps({**row, **x.meta}) + "\n")
    return p
