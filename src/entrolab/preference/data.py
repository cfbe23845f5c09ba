"""Preference pairs: the in-memory type, loaders and writers (JSONL, Parquet, HF ``datasets`` folder).

One row: ``{"prompt": str, "chosen": str, "rejected": str}`` plus optional ``"label"`` (soft label,
P(chosen ≻ rejected) in [0, 1], default 1) and ``"chosen_score"`` / ``"rejected_score"`` (floats,
e.g. the verifier's or a reward model's scores the pair was built from). Every other column is
kept, unchanged, in ``PreferencePair.meta`` (and written back out by ``write_preferences``).

Formats, chosen from the path (docs/preferences.md):

* ``*.jsonl`` / ``*.ndjson``: one JSON object per line; errors name ``file:line``.
* ``*.parquet``: one row per pair (needs pyarrow); errors name ``file: row N`` (1-based).
* a folder written by ``datasets.Dataset.save_to_disk`` (needs ``datasets``); errors name
  ``folder: row N`` (1-based). A ``DatasetDict`` folder needs ``split=``.

In the columnar formats a null cell means "absent" (a column exists for every row there), so a
null label is the default 1 and null extra columns are not put into ``meta``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: The columns with a meaning; every other column goes to ``meta``.
COLUMNS = ("prompt", "chosen", "rejected", "label", "chosen_score", "rejected_score")
FORMATS = ("jsonl", "parquet", "datasets")


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
    """Validate one row; errors name ``where`` (``file:line`` or ``file: row N``)."""
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


def pair_to_row(x: PreferencePair) -> dict[str, Any]:
    """The row ``write_preferences`` stores (scores only when set; ``meta`` keys as extra columns)."""
    row: dict[str, Any] = {"prompt": x.prompt, "chosen": x.chosen, "rejected": x.rejected, "label": x.label}
    if x.chosen_score is not None:
        row["chosen_score"] = x.chosen_score
    if x.rejected_score is not None:
        row["rejected_score"] = x.rejected_score
    clash = sorted(set(x.meta) & set(COLUMNS))
    if clash:  # a meta key named like a column would silently overwrite (or be overwritten by) it
        raise ValueError(f"pair meta keys {clash} clash with the preference columns {COLUMNS}")
    return {**row, **x.meta}


def format_of(path: str | Path, format: str | None = None) -> str:
    """``jsonl`` | ``parquet`` | ``datasets`` for ``path``: ``format`` if given, else from the path.

    ``.jsonl``/``.ndjson`` → jsonl, ``.parquet`` → parquet, an existing folder or a path without a
    suffix → datasets (a ``save_to_disk`` folder); anything else is an error.
    """
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"unknown preference format {format!r}; use one of {FORMATS}")
        return format
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    if p.is_dir() or suffix == "":
        return "datasets"
    raise ValueError(f"{p}: unknown preference file type {suffix!r}; use .jsonl, .parquet or a "
                     "datasets folder (no suffix)")


def load_preferences(path: str | Path, *, format: str | None = None, split: str | None = None
                     ) -> list[PreferencePair]:
    """Pairs from a JSONL file, a Parquet file or a ``datasets`` folder (see the module docstring).

    Args:
        path: the file or folder.
        format: ``jsonl`` | ``parquet`` | ``datasets``; default from the path (``format_of``).
        split: which split of a ``DatasetDict`` folder (needed when it has more than one).
    Raises:
        FileNotFoundError when ``path`` does not exist; ValueError naming the file and line/row of
        the first malformed row, or the file when it holds no pairs.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"preference data not found: {p}")
    fmt = format_of(p, format)
    if fmt == "datasets":
        rows = _dataset_rows(p, split)
    else:
        from entrolab.tasks.jsonl import read_rows  # JSONL/Parquet reading, shared with the jsonl task

        if fmt == "jsonl" and p.suffix.lower() not in (".jsonl", ".ndjson"):
            raise ValueError(f"{p}: JSONL files must end in .jsonl or .ndjson")
        if fmt == "parquet" and p.suffix.lower() != ".parquet":
            raise ValueError(f"{p}: Parquet files must end in .parquet")
        try:
            rows = read_rows(p)
        except ValueError as err:
            if "has no rows" in str(err):
                raise ValueError(f"{p}: no preference pairs") from None
            raise
        if fmt == "parquet":
            rows = [(where, _drop_nulls(row)) for where, row in rows]
    if split is not None and fmt != "datasets":
        raise ValueError(f"{p}: split={split!r} applies to datasets folders only")
    pairs = [pair_from_row(row, where) for where, row in rows]
    if not pairs:
        raise ValueError(f"{p}: no preference pairs")
    return pairs


def _drop_nulls(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}


def _dataset_rows(p: Path, split: str | None) -> list[tuple[str, dict[str, Any]]]:
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{p}: reading a datasets folder needs `datasets`: pip install 'entrolab[data]'") from None
    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as err:
        raise ValueError(f"{p}: not a folder written by datasets' save_to_disk ({err})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise ValueError(f"{p}: a DatasetDict with splits {sorted(ds)}; say which with split=")
            split = next(iter(ds))
        if split not in ds:
            raise ValueError(f"{p}: no split {split!r}; splits: {sorted(ds)}")
        ds, where = ds[split], f"{p}[{split}]"
    elif split is not None:
        raise ValueError(f"{p}: split={split!r} given but the folder holds a single Dataset")
    else:
        where = str(p)
    return [(f"{where}: row {i}", _drop_nulls(row)) for i, row in enumerate(ds, 1)]


def write_preferences(pairs: list[PreferencePair], path: str | Path, *, format: str | None = None) -> Path:
    """Write ``pairs`` as JSONL, Parquet or a ``datasets`` folder (format as in ``load_preferences``).

    ``load_preferences(write_preferences(pairs, path))`` gives back equal pairs with equal ``meta``
    (in the columnar formats, meta keys a pair lacks are null for it and dropped again on reading).
    """
    import json

    p = Path(path)
    fmt = format_of(p, format)
    rows = [pair_to_row(x) for x in pairs]
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with open(p, "w", encoding="utf-8") as f:
            for row in rows:
                # allow_nan=False: NaN/inf would write a file our own reader rejects
                f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        return p
    # Columnar: one column per key of any row (pyarrow's from_pylist would take the first row's
    # keys only and silently drop the others).
    keys = list(dict.fromkeys(k for row in rows for k in row))
    columns = {k: [row.get(k) for row in rows] for k in keys}
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{p}: writing Parquet needs pyarrow: pip install 'entrolab[data]'") from None
        try:
            table = pa.table(columns)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(f"{p}: a meta column mixes types across pairs ({err})") from None
        pq.write_table(table, p)
        return p
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{p}: writing a datasets folder needs `datasets`: pip install 'entrolab[data]'") from None
    datasets.Dataset.from_dict(columns).save_to_disk(str(p))
    return p


def flip_labels(pairs: list[PreferencePair], *, frac: float, seed: int = 0) -> list[PreferencePair]:
    """Label noise for robustness studies: swap chosen and rejected of exactly ``m`` pairs.

    ``m = floor(frac · n + 0.5)`` (nearest integer, halves up), the pairs drawn without replacement
    by ``random.Random(seed)``, so the same (pairs, frac, seed) flips the same pairs. A flipped pair
    also swaps its scores and keeps its label: the data now claims the worse response is preferred,
    which is the noise model of the robust-DPO and POWER-DL studies. Every returned pair records
    ``meta["flipped"]``: whether it is now reversed relative to the unflipped data (flipping flipped
    data twice restores it); the input pairs are not changed.
    """
    if not (isinstance(frac, (int, float)) and not isinstance(frac, bool) and 0.0 <= frac <= 1.0):
        raise ValueError(f"flip_labels: frac must be a number in [0, 1], got {frac!r}")
    n = len(pairs)
    m = math.floor(frac * n + 0.5)
    flip = set(random.Random(seed).sample(range(n), m))
    out = []
    for i, x in enumerate(pairs):
        if i in flip:
            x = replace(x, chosen=x.rejected, rejected=x.chosen, chosen_score=x.rejected_score,
                        rejected_score=x.chosen_score)
        # XOR with an earlier flip, so meta["flipped"] always says whether the pair is reversed
        out.append(replace(x, meta={**x.meta, "flipped": bool(x.meta.get("flipped", False)) != (i in flip)}))
    return out
