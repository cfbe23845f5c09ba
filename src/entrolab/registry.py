"""One small registry class; one registry instance per pipeline stage.

Every entry carries the paper it implements (title + arXiv id, or ``"baseline"``), so
``entrolab list`` can print where each component comes from. Entries are factories (usually
classes) whose keyword-only constructor arguments are the component's hyperparameters; the
recipe's ``{name: ..., **params}`` block is validated against that signature, so a typo in a
hyperparameter fails with the closest valid name.

Users plug their own component without registering it by giving a dotted import path
(``"mypkg.rewards:my_reward"`` or ``"mypkg.rewards.my_reward"``) as the name.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from entrolab import hyperparams


class ConfigError(ValueError):
    """A user-facing configuration error. The message names the offending key and a fix."""


def closest(word: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """Return the closest candidate to ``word`` (difflib ratio), or None."""
    hits = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return hits[0] if hits else None


def did_you_mean(word: str, candidates) -> str:
    hit = closest(word, list(candidates))
    return f" Did you mean '{hit}'?" if hit else ""


@dataclass(frozen=True)
class Entry:
    """A registered component: the factory and where it comes from."""

    name: str
    factory: Callable[..., Any]
    stage: str
    paper: str
    arxiv: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def citation(self) -> str:
        if self.paper == "baseline":
            return "baseline"
        return f"{self.paper} (arXiv:{self.arxiv})" if self.arxiv else self.paper

    def params(self) -> dict[str, Any]:
        """Hyperparameters the factory accepts, with their defaults (``inspect._empty`` if required)."""
        return _factory_params(self.factory)

    def annotations(self) -> dict[str, Any]:
        """Resolved type annotations of the hyperparameters (those that cannot be resolved are left out)."""
        return hyperparams.factory_hints(self.factory)


def check_value(path: str, value: Any, ann: Any, default: Any = inspect.Parameter.empty) -> Any:
    """``value`` of hyperparameter ``path`` checked against annotation ``ann``, coerced (int → float).

    Raises ConfigError naming the key, the expected type and the value, e.g.
    ``objective.surrogate.eps_high: expected float (finite), got 'abc' (str)``. NaN is rejected for
    every float; inf only passes where ``default`` is itself infinite (a documented "no limit").
    """
    allow_inf = isinstance(default, float) and math.isinf(default)
    try:
        return hyperparams.coerce(value, ann, allow_inf=allow_inf)
    except hyperparams.Mismatch:
        raise ConfigError(f"{path}: expected {hyperparams.expected(ann, allow_inf=allow_inf)}, "
                          f"got {value!r} ({type(value).__name__})") from None


def _factory_params(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    if target is object.__init__:  # a class without a constructor takes no hyperparameters
        return {}
    sig = inspect.signature(target)
    out: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL,):
            continue
        if p.kind is p.VAR_KEYWORD:
            out["**"] = None
            continue
        out[p.name] = p.default
    return out


@dataclass
class Registry:
    """Name → component factory for one stage (tasks, rewards, advantages, ...)."""

    stage: str
    _entries: dict[str, Entry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def register(
        self,
        name: str,
        *,
        paper: str,
        arxiv: str | None = None,
        aliases: tuple[str, ...] = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a factory under ``name``.

        ``paper`` is the paper title, or ``"baseline"`` for standard methods that need no citation.
        Re-registering the same name with a different object is an error (silent overrides are how
        two modules end up fighting over one name).
        """
        if not paper:
            raise ValueError(f"{self.stage} entry '{name}' needs a paper title or 'baseline'")

        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            for key in (name, *aliases):
                old = self._entries.get(self._aliases.get(key, key))
                if old is not None and old.factory is not factory:
                    raise ValueError(f"{self.stage} '{key}' is already registered to {old.factory!r}")
            self._entries[name] = Entry(name, factory, self.stage, paper, arxiv, tuple(aliases))
            for a in aliases:
                self._aliases[a] = name
            return factory

        return deco

    # ---------------------------------------------------------------- lookup
    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry:
        """Look up ``name``; a dotted path (``pkg.mod:obj`` or ``pkg.mod.obj``) imports a user object."""
        name = self._aliases.get(name, name)
        if name in self._entries:
            return self._entries[name]
        if "." in name or ":" in name:
            return Entry(name, _import_object(name, self.stage), self.stage, paper="user-supplied")
        raise ConfigError(
            f"unknown {self.stage} '{name}'.{did_you_mean(name, self.names())} "
            f"Valid {self.stage}: {', '.join(self.names())}; or give a dotted import path 'pkg.module:object'."
        )

    def build(self, name: str, params: dict[str, Any] | None = None, *, where: str = "") -> Any:
        """Instantiate ``name`` with hyperparameters ``params``, checking them against its signature.

        ``where`` is the dotted config path used in error messages (e.g. ``objective.surrogate``).
        """
        entry = self.get(name)
        params = dict(params or {})
        accepted = entry.params()
        if "**" not in accepted:
            for key in params:
                if key not in accepted:
                    path = f"{where}.{key}" if where else key
                    valid = [k for k in accepted if k != "**"]
                    raise ConfigError(
                        f"unknown key '{path}' for {self.stage} '{entry.name}'.{did_you_mean(key, valid)} "
                        f"Valid keys: {', '.join(valid) or '(none)'}"
                    )
        missing = [k for k, d in accepted.items() if d is inspect.Parameter.empty and k not in params and k != "**"]
        if missing:
            raise ConfigError(f"{where or self.stage}: '{entry.name}' needs {', '.join(missing)}")
        hints = entry.annotations()
        for key, value in params.items():
            if key in hints and key in accepted:
                params[key] = check_value(f"{where}.{key}" if where else key, value, hints[key], accepted[key])
        try:
            obj = entry.factory(**params)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where or self.stage}: cannot build '{entry.name}': {err}") from err
        return obj


def _import_object(path: str, stage: str) -> Any:
    import os
    import sys

    mod_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as err:
            # The `entrolab` console script (unlike `python -m`) does not put the current directory
            # on sys.path, so `mytask:Echo` next to the recipe was not found. Look there last (after
            # installed packages, so a local file never shadows one) when the top package is missing.
            here = os.getcwd()
            if err.name != mod_name.split(".")[0] or here in sys.path or "" in sys.path:
                raise
            sys.path.append(here)
            importlib.invalidate_caches()
            module = importlib.import_module(mod_name)
    except ImportError as err:
        raise ConfigError(f"cannot import module '{mod_name}' for {stage} '{path}' (searched installed "
                          f"packages and the current directory {os.getcwd()}): {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module '{mod_name}' has no attribute '{attr}' (for {stage} '{path}')") from None


# One registry per stage. Modules register into these at import time; ``entrolab.components``
# imports every built-in module so that listing is complete.
TASKS = Registry("task")
REWARDS = Registry("reward")
SHAPERS = Registry("reward shaper")
ADVANTAGES = Registry("advantage estimator")
SURROGATES = Registry("surrogate")
TOKEN_WEIGHTS = Registry("token weight")
AGGREGATIONS = Registry("aggregation")
REGULARIZERS = Registry("regularizer")
PREFERENCE_LOSSES = Registry("preference loss")

ALL_REGISTRIES: dict[str, Registry] = {
    "tasks": TASKS,
    "rewards": REWARDS,
    "shapers": SHAPERS,
    "advantages": ADVANTAGES,
    "surrogates": SURROGATES,
    "token_weights": TOKEN_WEIGHTS,
    "aggregations": AGGREGATIONS,
    "regularizers": REGULARIZERS,
    "preference_losses": PREFERENCE_LOSSES,
}
