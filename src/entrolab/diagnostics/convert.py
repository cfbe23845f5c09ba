"""Converters from other frameworks' rollout dumps to our rollout schema (``entrolab convert``).

verl writes one JSONL file per training step, ``<dir>/<step>.jsonl``, from
``RayPPOTrainer._write_generations`` both for validation (``trainer.validation_data_dir``) and for
training rollouts (``trainer.rollout_data_dir``). Each line holds ``input`` (decoded prompt),
``output`` (decoded completion), ``gts`` (ground truth), ``score`` (the sequence reward),
``step``, and every per-sample key the reward function returned (``reward_extra_info``), e.g.
``acc`` and ``pred`` from verl's math scorers or ours (``compute_score``).

Mapping (one output record per input line; nothing is dropped):

* ``prompt_id`` = the first 16 hex digits of sha1(``input``): verl has no prompt id, and every
  sample of one prompt shares its text;
* ``run`` = ``base`` for ``step == base_step`` (verl's validation before training is step 0, the
  base model), else the given run label;
* ``correct`` = ``acc`` when the line has it, else ``score > 0``; ``answer`` = ``pred`` (null when
  absent or empty); ``reward`` = ``score``;
* other numeric extras go to ``rewards`` (further reward functions), all else (``gts``,
  ``data_source``, strings) to ``meta``.

The dump is only read and parsed (never executed). Errors name the file and line.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterator

from entrolab.diagnostics.schema import RolloutFormatError, parse_sample

VERL_REQUIRED = ("input", "output", "score", "step")


def verl_files(dump: Path) -> list[Path]:
    """The step files of a verl dump directory, in step order (or the single file given)."""
    dump = Path(dump)
    if dump.is_file():
        return [dump]
    if not dump.is_dir():
        raise FileNotFoundError(f"verl dump not found: {dump}")
    files = sorted(dump.glob("*.jsonl"))
    if not files:
        raise RolloutFormatError(f"{dump}: no <step>.jsonl files (is this trainer.validation_data_dir or "
                                 "trainer.rollout_data_dir of a verl run?)")
    bad = [f.name for f in files if not f.stem.isdigit()]
    if bad:
        raise RolloutFormatError(f"{dump}: files {bad} are not named <step>.jsonl as verl writes them; move them away")
    return sorted(files, key=lambda f: int(f.stem))


def verl_record(d: Any, *, run: str, base_step: int | None, where: str) -> dict[str, Any]:
    """One verl dump line (parsed JSON) as a record of our schema."""
    if not isinstance(d, dict):
        raise RolloutFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
    missing = [k for k in VERL_REQUIRED if k not in d]
    if missing:
        raise RolloutFormatError(f"{where}: missing verl dump keys {missing} (have {sorted(d)})")
    score, step = d["score"], d["step"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise RolloutFormatError(f"{where}: 'score' must be a finite number, got {score!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise RolloutFormatError(f"{where}: 'step' must be an integer >= 0, got {step!r}")
    if not isinstance(d["input"], str) or not isinstance(d["output"], str):
        raise RolloutFormatError(f"{where}: 'input' and 'output' must be strings")
    correct = bool(d["acc"]) if "acc" in d else score > 0
    pred = d.get("pred")
    rewards, meta = {}, {}
    for k, v in d.items():
        if k in (*VERL_REQUIRED, "acc", "pred"):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            rewards[k] = float(v)
        else:
            meta[k] = v
    rec = {"prompt_id": hashlib.sha1(d["input"].encode()).hexdigest()[:16],
           "run": "base" if base_step is not None and step == base_step else run,
           "step": step, "completion": d["output"], "reward": float(score), "correct": correct,
           "answer": None if pred in (None, "") else str(pred)}
    if rewards:
        rec["rewards"] = rewards
    if meta:
        rec["meta"] = meta
    return rec


def iter_verl(dump: Path, *, run: str, base_step: int | None = 0) -> Iterator[dict[str, Any]]:
    """Records of every line of a verl dump, validated against our schema."""
    for f in verl_files(dump):
        with open(f, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{f}:{i}"
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as err:
                    raise RolloutFormatError(f"{where}: not valid JSON ({err.msg})") from None
                rec = verl_record(d, run=run, base_step=base_step, where=where)
                try:
                    parse_sample(rec)  # the record must read back as our schema (meta is kept as is)
                except ValueError as err:
                    raise RolloutFormatError(f"{where}: {err}") from None
                yield rec


def convert_verl(dump: Path, out_dir: Path, *, run: str = "verl", base_step: int | None = 0) -> Path:
    """Write ``<out_dir>/<run>.jsonl`` in our rollout schema from a verl dump; returns its path.

    Written to a temporary file and renamed, so a failed conversion leaves no half file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{run}.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for rec in iter_verl(Path(dump), run=run, base_step=base_step):
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise RolloutFormatError(f"{dump}: the verl dump has no samples")
    tmp.replace(path)
    return path
