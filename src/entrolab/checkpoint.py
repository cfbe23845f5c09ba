"""Atomic, verified checkpoints: weights as safetensors, trainer state loaded with ``weights_only=True``.

A checkpoint is written to a temporary folder next to its final place, every file and the folder are
fsync'ed, and the folder is renamed into place, so a crash (or a NaN stop) never leaves a
half-written "latest" checkpoint behind. ``manifest.json`` records the sha256 and size of every
file, so a truncated, zeroed or bit-flipped file is noticed on ``--resume`` and ``eval``
(``verify_checkpoint``) and the newest *valid* checkpoint is used instead (``newest_valid``).
A write that fails (a full disk) removes its partial folder and leaves the previous checkpoints as
they were (``CheckpointWriteError``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

_STEP_DIR = re.compile(r"^step_(\d{6,})$")
_STALE = re.compile(r"^\.(tmp|old|del)-(.+)-\d+$")
MANIFEST = "manifest.json"
#: Below this many free bytes after a failed write, the failure is reported as a full disk (torch.save
#: raises a bare ``RuntimeError: [enforce fail at inline_container.cc]`` without an errno).
_LOW_SPACE_BYTES = 16 * 2**20


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; its partial folder was removed, older checkpoints are intact."""


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Checkpoint folders under ``root`` (renamed into place, so complete unless damaged later), oldest first.

    Temporary ``.tmp-*``/``.old-*`` folders are ignored; ``verify_checkpoint`` says whether one is intact.
    """
    if not root.exists():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint folder, unverified (see ``newest_valid`` for the one to load)."""
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


# ---------------------------------------------------------------------------- manifest + verification
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The checkpoint's manifest, or None if it has none (written before manifests existed) or it is unreadable."""
    try:
        data = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def verify_checkpoint(path: Path) -> str | None:
    """None if checkpoint ``path`` is intact, else the reason naming the bad file.

    Every file listed in the manifest must exist with its recorded size and sha256. A checkpoint
    without a manifest (entrolab 0.1) is checked only for its two required files.
    """
    if not (path / MANIFEST).exists():
        missing = [n for n in ("model.safetensors", "trainer_state.pt") if not (path / n).exists()]
        return f"{path / missing[0]}: missing" if missing else None
    manifest = read_manifest(path)
    if manifest is None:
        return f"{path / MANIFEST}: unreadable or not a checkpoint manifest"
    for name, want in sorted(manifest["files"].items()):
        f = path / name
        if not f.is_file():
            return f"{f}: missing"
        size = f.stat().st_size
        if size != want.get("bytes"):
            return f"{f}: {size} bytes, the manifest says {want.get('bytes')} (truncated or overwritten)"
        if _sha256(f) != want.get("sha256"):
            return f"{f}: sha256 differs from the manifest (the file is corrupted)"
    return None


def newest_valid(root: Path, *, max_step: int | None = None,
                 check: Callable[[Path], str | None] = verify_checkpoint) -> tuple[Path | None, list[str]]:
    """The newest checkpoint under ``root`` that passes ``check``, and the reasons newer ones were skipped."""
    skipped = []
    for step, path in reversed(list_checkpoints(root)):
        if max_step is not None and step > max_step:
            continue
        reason = check(path)
        if reason is None:
            return path, skipped
        skipped.append(reason)
    return None, skipped


def remove_tree(path: Path) -> None:
    """Delete a folder so that it vanishes at once: rename to ``.del-*``, then delete (a kill in between
    leaves a ``.del-*`` folder for ``clean_stale``, never a half-deleted checkpoint that looks real)."""
    gone = path.parent / f".del-{path.name}-{os.getpid()}"
    os.replace(path, gone)
    shutil.rmtree(gone)


def clean_stale(root: Path) -> list[str]:
    """Remove ``.tmp-*``/``.old-*``/``.del-*`` folders (and files) left by killed processes; returns what was done.

    A ``.old-step_N-*`` folder is the previous ``step_N`` moved aside while a re-save of the same step
    was renamed into place: if ``step_N`` is missing (killed between the two renames) it is moved back.
    Call only when no other process writes to ``root`` (the trainer owns its run directory).
    """
    done = []
    if not root.exists():
        return done
    for p in sorted(root.iterdir()):
        m = _STALE.match(p.name)
        if not m:
            continue
        final = root / m.group(2)
        if m.group(1) == "old" and _STEP_DIR.match(m.group(2)) and not final.exists():
            os.replace(p, final)
            done.append(f"restored {final} from {p.name}")
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p}")
        else:  # a temporary file of an atomic rewrite (recipe.yaml, a log)
            p.unlink(missing_ok=True)
            done.append(f"removed {p}")
    return done


# ---------------------------------------------------------------------------- finiteness
def nonfinite_tensors(named: dict[str, Any], *, limit: int = 3) -> list[str]:
    """Names of (up to ``limit``) floating tensors in a possibly nested mapping holding NaN/inf."""
    bad: list[str] = []

    def walk(prefix: str, obj: Any) -> None:
        if len(bad) >= limit:
            return
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
                bad.append(prefix)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)

    walk("", named)
    return bad


# ---------------------------------------------------------------------------- RNG
def rng_state(py_rng: random.Random, generator: torch.Generator) -> dict[str, Any]:
    state = {
        "python": py_rng.getstate(),
        "sampling": generator.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], py_rng: random.Random, generator: torch.Generator) -> None:
    py = state["python"]
    # torch.save turns the inner tuple into a list; random.setstate needs tuples.
    py_rng.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(state["sampling"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- writing
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _is_disk_full(err: BaseException, free: int | None) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left" in str(err) or (free is not None and free < _LOW_SPACE_BYTES)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    components_state: dict[str, Any],
    keep: int = 2,
    run_id: str | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically under ``root`` with a manifest, then prune.

    Pruning keeps the newest ``keep`` checkpoints among those at or below ``step`` and never touches
    a checkpoint whose manifest names another ``run_id``: checkpoints newer than the one just written
    (left by a damaged later save) are replaced when their step is saved again, not preferred to it.

    Raises:
        CheckpointWriteError: a file could not be written (e.g. a full disk); the partial folder is
            removed and the previous checkpoints are untouched.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    current = str(tmp)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        current = str(tmp / "model.safetensors")
        from entrolab.models.loading import save_model  # (imports transformers: only when writing)

        save_model(model, tmp)  # merged weights (+ the adapters) for a LoRA policy
        current = str(tmp / "tokenizer files")
        tokenizer.save_pretrained(tmp)
        for name, obj in (("trainer_state.pt", trainer_state), ("components.pt", components_state)):
            current = str(tmp / name)
            torch.save(obj, tmp / name)
        current = str(tmp / MANIFEST)
        # Files in sub-folders too (a LoRA policy's adapter/), by their path relative to the checkpoint.
        files = {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "run_id": run_id, "files": files}, indent=1))
        for p in tmp.rglob("*"):  # data on disk before the rename makes it visible (ext4/xfs reorder otherwise)
            _fsync(p)
        _fsync(tmp)
    except (OSError, RuntimeError) as err:
        free = _free_bytes(root)  # before the cleanup frees the partial folder's space
        full = _is_disk_full(err, free)
        shutil.rmtree(tmp, ignore_errors=True)
        previous = list_checkpoints(root)  # untouched: nothing outside ``tmp`` was written yet
        prev = (f"the previous checkpoint {previous[-1][1]} is intact" if previous
                else "no earlier checkpoint exists")
        if full:
            what = f"ran out of space writing {current} ({free} bytes were left on that filesystem)"
        else:
            what = f"failed writing {current}"
        raise CheckpointWriteError(f"checkpoint {final.name} not written: {what}: {err}. Removed the partial "
                                   f"folder {tmp}; {prev}.") from err
    if final.exists():  # re-saving the same step (e.g. replacing a damaged one): swap, then drop the old
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync(root)
    prune(root, upto=step, keep=keep, run_id=run_id)
    return final


def prune(root: Path, *, upto: int, keep: int, run_id: str | None) -> None:
    """Delete all but the newest ``keep`` checkpoints at or below step ``upto`` that belong to ``run_id``
    (a manifest naming another run protects its checkpoint; folders without a readable manifest count
    as ours, since the trainer refuses to start a fresh run in a directory that holds one)."""
    ours = []
    for s, p in list_checkpoints(root):
        if s > upto:
            continue
        owner = (read_manifest(p) or {}).get("run_id")
        if owner is None or run_id is None or owner == run_id:
            ours.append(p)
    for path in ours[:-keep]:
        remove_tree(path)


def load_trainer_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load (trainer_state, components_state) without unpickling arbitrary objects."""
    trainer_state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    components_state = torch.load(path / "components.pt", map_location="cpu", weights_only=True)
    return trainer_state, components_state
