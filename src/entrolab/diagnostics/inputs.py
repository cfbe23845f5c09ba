"""Load rollout JSONL files, our eval JSONs and run directories into one internal form.

Internal form: a :class:`Dataset` of models, one per (run, step), each holding per-prompt
:class:`PromptGroup` aggregates (counts of answers, correct answers, token entropy) and, when the
input was a rollout file, the raw :class:`~entrolab.diagnostics.schema.Sample` list. Eval JSONs
(``run_dir/eval/<label>.json``, format in docs/CONTRACTS.md) carry counts but no per-sample data, so
the sections that need per-token data are disabled for them (the report says so).

Accepted paths: ``*.jsonl`` rollout files; ``*.json`` eval files; a run directory (its
``eval/*.json``, any ``rollouts*.jsonl`` in it, and ``metrics.jsonl`` for per-step curves).

Models of a run directory are labelled by the run's name (``recipe.yaml``'s ``name``, else the
directory's name), see :func:`load_run_dir`: its ``final`` and ``step_*`` evals are that run at
their steps, its training rollouts (a few samples per prompt, on training prompts) a separate run
``<name> (training rollouts)``, so they never mix with the evals' larger samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from entrolab.diagnostics.schema import RolloutFormatError, Sample, read_rollouts

NONE_ANSWER = "<none>"  # key for unparsed answers, as in the eval JSON
TRAINING_ROLLOUTS = " (training rollouts)"  # suffix of the run label of a run directory's rollouts.jsonl


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
    eval_label: str | None = None      # eval JSONs: the file's "label" (base, step_000010, final, ...)

    @property
    def samples(self) -> list[Sample]:
        return [s for g in self.groups.values() for s in g.samples]


@dataclass
class Dataset:
    """Everything loaded: models keyed by (run, step) in input order, and per-run metric lines."""

    models: dict[tuple[str, int], ModelData] = field(default_factory=dict)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # inputs merged or skipped while loading, and why
    run_dirs: dict[str, str] = field(default_factory=dict)  # run name -> its directory

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
    model = ModelData(run=label if run is None else run, step=int(m.group(1)) if m else 0, source="eval",
                      eval_label=label)
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


def _add_model(data: Dataset, model: ModelData, path: Path, *, prefix: str | None = None) -> None:
    key = (model.run, model.step)
    if key in data.models and prefix:
        # Two loose eval files with one label (eval/base.json of two runs): prefix the folder's name.
        model.run = f"{prefix}/{model.run}"
        key = (model.run, model.step)
    if key in data.models:
        raise ValueError(f"{path}: model '{model.run}' at step {model.step} was already loaded from another file")
    data.models[key] = model


def _same_counts(a: ModelData, b: ModelData) -> bool:
    """Two eval models drew the same per-prompt counts (e.g. one base model's cached eval in two runs)."""
    return a.groups.keys() == b.groups.keys() and all(
        (g.n, g.c, g.answer_counts) == (b.groups[p].n, b.groups[p].c, b.groups[p].answer_counts) for p, g in a.groups.items())


def run_name(run_dir: Path) -> str:
    """A run directory's name: ``recipe.yaml``'s ``name``, else the directory's name."""
    recipe = run_dir / "recipe.yaml"
    if not recipe.exists():
        return run_dir.name
    try:
        obj = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RolloutFormatError(f"{recipe}: not valid YAML, so the run has no name ({err})") from None
    name = obj.get("name") if isinstance(obj, dict) else None
    return name if isinstance(name, str) and name else run_dir.name


def load_run_dir(data: Dataset, path: Path, samples: list[Sample]) -> None:
    """Add one run directory's evals, training rollouts (appended to ``samples``) and metrics.

    Labels (R = the run's name, made unique among loaded runs with the directory's path):
    ``eval/base.json`` is run ``base`` (a second run's base with identical counts is the same
    evaluation and is merged, else it becomes ``R/base``); ``step_N`` evals are run R at step N;
    ``final`` is run R at the last step of ``metrics.jsonl`` (replacing a ``step_N`` eval of that
    same step); any other label L is run ``R/L``; ``rollouts*.jsonl`` samples keep their ``run``
    (the trainer writes the recipe's name) and get the suffix `` (training rollouts)`` when an eval
    model has that label.
    """
    evals = sorted((path / "eval").glob("*.json"))
    rollouts = sorted(path.glob("rollouts*.jsonl"))
    metrics = path / "metrics.jsonl"
    if not (evals or rollouts or metrics.exists()):
        raise FileNotFoundError(f"{path}: a run directory needs eval/*.json, rollouts*.jsonl or metrics.jsonl")
    taken = set(data.run_dirs) | set(data.runs())
    name = run_name(path)
    for candidate in (name, f"{name} ({path.name})", f"{name} ({path})"):
        if candidate not in taken:
            name = candidate
            break
    else:
        raise ValueError(f"{path}: run '{name}' was already loaded")
    data.run_dirs[name] = str(path)
    rows = read_metrics(metrics) if metrics.exists() else []
    models = [read_eval_json(f) for f in evals]
    steps = [m.step for m in models if _STEP_LABEL.search(m.eval_label or "")]
    last = max((r["step"] for r in rows), default=max(steps, default=-1) + 1)
    # Final last, so it replaces a step_N eval of the same checkpoint instead of being replaced.
    for model, f in sorted(zip(models, evals), key=lambda mf: mf[0].eval_label == "final"):
        label = model.eval_label
        if label == "base":
            model.run = "base"
            if ("base", 0) in data.models:
                if _same_counts(data.models[("base", 0)], model):
                    data.notes.append(f"{f}: same counts as the base eval already loaded; merged into 'base'")
                    continue
                model.run = f"{name}/base"
                data.notes.append(f"{f}: differs from the base eval already loaded; kept as '{model.run}' "
                                  "(comparisons use 'base' unless another base is chosen)")
        elif label == "final":
            model.run, model.step = name, last
            if (name, last) in data.models:
                data.notes.append(f"{f}: final eval at step {last} replaces that step's step_* eval")
                del data.models[(name, last)]
        elif _STEP_LABEL.search(label or ""):
            model.run = name
        else:
            model.run = f"{name}/{label}"
        _add_model(data, model, f)
    eval_runs = {m.run for m in data.models.values() if m.source == "eval"}
    for f in rollouts:
        # Training rollouts keep their own run label unless an eval model has it (the run's final
        # eval is labelled by the run's name, as the trainer labels the rollouts): then they are a
        # separate model, so the two never merge into one (run, step) with mixed sample counts.
        samples.extend(dataclasses.replace(s, run=s.run + TRAINING_ROLLOUTS) if s.run in eval_runs else s
                       for s in read_rollouts(f))
    if rows:
        data.metrics[name] = rows


def load_dataset(paths: list[Path | str]) -> Dataset:
    """Load rollout files, eval JSONs and run directories (see the module docstring)."""
    if not paths:
        raise ValueError("diagnose needs at least one input path")
    data = Dataset()
    samples: list[Sample] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            load_run_dir(data, path, samples)
        elif not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        elif path.suffix == ".jsonl":
            samples.extend(read_rollouts(path))
        elif path.suffix == ".json":
            _add_model(data, read_eval_json(path), path, prefix=path.parent.parent.name)
        else:
            raise ValueError(f"{path}: expected a .jsonl rollout file, a .json eval file or a run directory")
        data.sources.append(str(path))
    group_samples(samples, data)
    return data
