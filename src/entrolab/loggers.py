"""Optional metric loggers next to ``metrics.jsonl``: TensorBoard and Weights & Biases.

One recipe switch, ``log.backends: [jsonl, tensorboard, wandb]`` (``config.LogCfg``). The trainer
keeps writing ``metrics.jsonl`` itself (resume, ``report`` and ``diagnose`` read it) and hands every
record it writes there to ``Loggers.log`` too: the step metrics (reward, ``policy/entropy``, clip
fractions, KL, advantage statistics, timings) and the evaluation summaries (``eval/pass@k``, answer
entropy, ...), so the diagnostics' key numbers show up in both tools under the same names.
Only numeric values are sent (bools as 0/1); the ``step`` field is the x axis.

The packages are optional (``pip install entrolab[loggers]``): asking for a backend whose package
is missing is an error naming the package, raised when the run starts, before any step.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

#: Package that each optional backend needs.
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class LoggerUnavailable(RuntimeError):
    """A backend was asked for but its package is not installed."""


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics record (``step`` excluded), as floats; strings and lists are left
    to ``metrics.jsonl``."""
    return {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))}


class TensorBoardLogger:
    """Scalars into ``<run_dir>/tensorboard`` (``tensorboard --logdir <run_dir>``)."""

    def __init__(self, run_dir: Path, *, resume_step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's writer needs the tensorboard package
            raise LoggerUnavailable("log.backends has 'tensorboard' but the 'tensorboard' package is not installed "
                                    "(pip install entrolab[loggers])") from err
        # purge_step: on resume, events a killed run wrote after its last checkpoint are dropped, as the
        # trainer drops those lines of metrics.jsonl, so redone steps are not drawn twice.
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step or None)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for k, v in scalars(record).items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()  # a killed run keeps what it logged

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run in ``<run_dir>/wandb``, offline unless ``log.wandb_mode: online``. Its id is kept in
    ``<run_dir>/wandb_id.txt``, so ``--resume`` continues the same W&B run."""

    def __init__(self, run_dir: Path, *, name: str, project: str, mode: str, config: dict[str, Any]):
        try:
            import wandb
        except ImportError as err:
            raise LoggerUnavailable("log.backends has 'wandb' but the 'wandb' package is not installed "
                                    "(pip install entrolab[loggers])") from err
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:16]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", mode=mode, dir=str(run_dir),
                              config=config, reinit="create_new")

    def log(self, record: dict[str, Any]) -> None:
        # W&B wants steps that never decrease; an eval record shares its training step, so it is
        # logged at that step too (W&B merges the two into one row).
        self.run.log(scalars(record), step=int(record.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """The recipe's optional backends; ``log`` sends one metrics record to each."""

    def __init__(self, backends: list[Any]):
        self.backends = backends

    def log(self, record: dict[str, Any]) -> None:
        for b in self.backends:
            b.log(record)

    def close(self) -> None:
        for b in self.backends:
            b.close()
        self.backends = []


def open_loggers(recipe, run_dir: Path, *, resume_step: int = 0) -> Loggers:
    """Open the backends ``recipe.log.backends`` asks for besides ``jsonl`` (the trainer writes that one)."""
    cfg = recipe.log
    out: list[Any] = []
    try:
        for name in cfg.backends:
            if name == "tensorboard":
                out.append(TensorBoardLogger(run_dir, resume_step=resume_step))
            elif name == "wandb":
                out.append(WandbLogger(run_dir, name=recipe.name, project=cfg.wandb_project, mode=cfg.wandb_mode,
                                       config=recipe.model_dump(mode="json")))
    except Exception:
        Loggers(out).close()  # the ones already open
        raise
    return Loggers(out)
