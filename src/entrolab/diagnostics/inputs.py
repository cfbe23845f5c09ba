"""Load rollout JSONL files, our eval JSONs and run directories into one internal form.

Internal form: a :class:`Dataset` of models, one per (run, step), each holding per-prompt
:class:`PromptGroup` aggregates (counts of answers, correct answers, token entropy) and, when the
input was a rollout file, the raw :class:`~entrolab.diagnostics.schema.Sample` list. Eval JSONs
(``run_dir/eval/<label>.json``, format in docs/CONTRACTS.md) carry counts but no per-sample data, so
the sections that need per-token data are disabled for them (the report says so).

Accepted paths: ``*.jsonl`` rollout files; ``*.json`` eval files; a run directory (its
``eval/*.json``, any ``rollouts*.jsonl`` in it, and ``metrics.jsonl`` for per-step curves).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrolab.diagnostics.schema import RolloutFormatError, Sample, read_rollouts

NONE_ANSWER = "<none>"  # key for unparsed answers, as in the eval JSON


@dataclass
class PromptGroup:
    """All samples one model drew for one prompt, aggregated."""

    prompt_id: str
    n: int = 0
    c: int = 0
    answer_counts: Counter = field(default_factory=Counter)   # canonical answer (or "<none>") -> count
    correct_counts: Counter = field(default_factory=Counter)  # correct canonical answer -> count
    solutions: tuple[str, ...] | None = None
    difficulty: str | None = None
    token_entropy: float | None = None  # mean over the group's valid tokens
    token_count: float = 0.0            # valid tokens behind token_entropy (weights across prompts)
    samples: list[Sample] = field(default_factory=list)


@dataclass
class ModelData:
    """One policy snapshot: a run label at one training step."""

    run: str
    step: int
    source: str  # "rollouts" or "eval"
    groups: dict[str, PromptGroup] = field(default_factory=dict)
    reward_delta: float | None = None  # eval JSONs: optional top-level "reward_delta" (policy cliff)

    @property
    def samples(self) -> list[Sample]:
        return [s for g in self.groups.values() for s in g.samples]


@dataclass
class Dataset:
    """Everything loaded: models keyed by (run, step) in input order, and per-run metric lines."""

    models: dict[tuple[str, int], ModelData] = field(default_factory=dict)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def runs(self) -> list[str]:
        """Run labels in input order."""
        return list(dict.fromkeys(run for run, _ in self.models))

    def steps(self, run: str) -> list[ModelData]:
        """The run's snapshots ordered by step."""
        return sorted((m for (r, _), m in self.models.items() if r == run), key=lambda m: m.step)

    def final(self, run: str) -> ModelData:
        """The run's last snapshot (what comparisons between models use)."""
        return self.steps(run)[-1]


def group_samples(samples: list[Sample], dataset: Dataset | None = None) -> Dataset:
    """Aggregate validated samples into per-(run, step, prompt) groups."""
    data = dataset if dataset is not None else Dataset()
    for s in samples:
        key = (s.run, s.step)
        model = data.models.get(key)
        if model is None:
            model = data.models[key] = ModelData(run=s.run, step=s.step, source="rollouts")
        elif model.source != "rollouts":
            raise ValueError(f"run '{s.run}' step {s.step} comes both from an eval JSON and from rollouts")
        g = model.groups.setdefault(s.prompt_id, PromptGroup(prompt_id=s.prompt_id))
        g.n += 1
        g.c += int(s.correct)
        g.answer_counts[s.answer if s.answer is not None else NONE_ANSWER] += 1
        if s.correct:
            if s.answer is None:
                raise ValueError(f"run '{s.run}' prompt '{s.prompt_id}': a correct sample needs its canonical 'answer'")
            g.correct_counts[s.answer] += 1
        if s.solutions is not None:
            g.solutions = s.solutions
        if s.difficulty is not None:
            g.difficulty = s.difficulty
        g.samples.append(s)
    for model in data.models.values():
        if model.source != "rollouts":
            continue  # eval JSONs carry their own per-prompt token entropy
        for g in model.groups.values():
            ent = [e for s in g.samples if s.entropies is not None for e in s.entropies]
            g.token_entropy = sum(ent) / len(ent) if ent else None
            g.token_count = float(len(ent))
    return data


_STEP_LABEL = re.compile(r"step_?(\d+)$")


def read_eval_json(path: Path | str, *, run: str | None = None) -> ModelData:
    """Convert one ``run_dir/eval/<label>.json`` file (docs/CONTRACTS.md) to a :class:`ModelData`.

    See :func:`eval_model` for the run label and step.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RolloutFormatError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    return eval_model(obj, where=str(path), run=run)


def eval_model(obj: dict[str, Any], *, where: str, run: str | None = None) -> ModelData:
    """Convert a loaded eval JSON dict (docs/CONTRACTS.md) to a :class:`ModelData`.

    The run label is ``run`` when given (a run directory passes its run's name), else the file's
    ``label``; the step is parsed from ``step_000010``-style labels (``base`` and anything else is
    step 0: each eval file is then its own single-step run). ``where`` names the source in errors.
    """
    if not isinstance(obj, dict):
        raise RolloutFormatError(f"{where}: an eval JSON must be an object")
    for key in ("label", "prompts"):
        if key not in obj:
            raise RolloutFormatError(f"{where}: eval JSON lacks '{key}' (see docs/CONTRACTS.md)")
    label = str(obj["label"])
    m = _STEP_LABEL.search(label)
    model = ModelData(run=label if run is None else run, step=int(m.group(1)) if m else 0, source="eval")
    delta = obj.get("reward_delta")
    if delta is not None:
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta):
            raise RolloutFormatError(f"{where}: 'reward_delta' must be a finite number, got {delta!r}")
        model.reward_delta = float(delta)
    for i, p in enumerate(obj["prompts"]):
        loc = f"{where}: prompts[{i}]"
        try:
            pid, n, c = str(p["id"]), int(p["n"]), int(p["correct"])
        except (KeyError, TypeError, ValueError) as err:
            raise RolloutFormatError(f"{loc}: needs 'id', integer 'n' and 'correct' ({err})") from None
        if not 0 <= c <= n:
            raise RolloutFormatError(f"{loc}: 'correct' = {c} is outside [0, n = {n}]")
        answers = Counter({str(k): int(v) for k, v in (p.get("answers") or {}).items()})
        correct = Counter({str(k): int(v) for k, v in (p.get("correct_answers") or {}).items()})
        if answers and sum(answers.values()) != n:
            raise RolloutFormatError(f"{loc}: answer counts sum to {sum(answers.values())}, not n = {n}")
        if sum(correct.values()) > c:
            raise RolloutFormatError(f"{loc}: correct_answers sum to more than 'correct' = {c}")
        meta = p.get("meta") or {}
        difficulty = p.get("difficulty", meta.get("difficulty") if isinstance(meta, dict) else None)
        ent = p.get("token_entropy")
        len_mean = p.get("len_mean")
        model.groups[pid] = PromptGroup(
            prompt_id=pid, n=n, c=c, answer_counts=answers, correct_counts=correct,
            solutions=tuple(p["solutions"]) if p.get("solutions") is not None else None,
            difficulty=None if difficulty is None else str(difficulty),
            token_entropy=float(ent) if isinstance(ent, (int, float)) and math.isfinite(ent) else None,
            token_count=float(n * len_mean) if isinstance(len_mean, (int, float)) and math.isfinite(len_mean) else float(n),
        )
    if not model.groups:
        raise RolloutFormatError(f"{where}: eval JSON has no prompts")
    return model


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """Read a run's ``metrics.jsonl`` (one JSON object with a ``step`` per line)."""
    rows = []
    with Path(path).open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RolloutFormatError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise RolloutFormatError(f"{path}:{lineno}: a metrics line needs an integer 'step'")
            rows.append(row)
    return rows


def _add_model(data: Dataset, model: ModelData, path: Path) -> None:
    key = (model.run, model.step)
    if key in data.models:
        # Two run directories both have eval/base.json: prefix with the run directory's name.
        model.run = f"{path.parent.parent.name}/{model.run}"
        key = (model.run, model.step)
        if key in data.models:
            raise ValueError(f"{path}: model '{model.run}' at step {model.step} was already loaded from another file")
    data.models[key] = model


def load_dataset(paths: list[Path | str]) -> Dataset:
    """Load rollout files, eval JSONs and run directories (see the module docstring)."""
    if not paths:
        raise ValueError("diagnose needs at least one input path")
    data = Dataset()
    samples: list[Sample] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            evals = sorted((path / "eval").glob("*.json"))
            rollouts = sorted(path.glob("rollouts*.jsonl"))
            metrics = path / "metrics.jsonl"
            if not (evals or rollouts or metrics.exists()):
                raise FileNotFoundError(f"{path}: a run directory needs eval/*.json, rollouts*.jsonl or metrics.jsonl")
            for f in evals:
                _add_model(data, read_eval_json(f), f)
            for f in rollouts:
                samples.extend(read_rollouts(f))
            if metrics.exists():
                data.metrics[path.name] = read_metrics(metrics)
        elif not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        elif path.suffix == ".jsonl":
            samples.extend(read_rollouts(path))
        elif path.suffix == ".json":
            _add_model(data, read_eval_json(path), path)
        else:
            raise ValueError(f"{path}: expected a .jsonl rollout file, a .json eval file or a run directory")
        data.sources.append(str(path))
    group_samples(samples, data)
    return data
