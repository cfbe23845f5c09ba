"""Registry: lookup, errors that name valid choices, hyperparameter checks, dotted import paths."""

import inspect
import math

import pytest

from entrolab.registry import ConfigError, Registry, check_value


def _reg():
    reg = Registry("widget")

    @reg.register("scaled", paper="A Paper on Widgets", arxiv="2501.00001")
    class Scaled:
        """Multiply by a factor."""

        def __init__(self, *, factor: float = 2.0, offset: float = 0.0):
            if factor <= 0:
                raise ValueError("factor must be > 0")
            self.factor, self.offset = factor, offset

    @reg.register("plain", paper="baseline")
    class Plain:
        """Do nothing."""

    return reg


def test_lookup_and_metadata():
    reg = _reg()
    assert reg.names() == ["plain", "scaled"]
    e = reg.get("scaled")
    assert e.citation == "A Paper on Widgets (arXiv:2501.00001)"
    assert e.summary == "Multiply by a factor."
    assert reg.get("plain").citation == "baseline"
    assert reg.build("scaled", {"factor": 3.0}).factor == 3.0


def test_unknown_name_lists_valid_and_closest():
    with pytest.raises(ConfigError) as err:
        _reg().get("scaeld")
    msg = str(err.value)
    assert "unknown widget 'scaeld'" in msg and "Did you mean 'scaled'?" in msg and "plain, scaled" in msg


def test_unknown_hyperparameter_names_path_and_closest():
    with pytest.raises(ConfigError) as err:
        _reg().build("scaled", {"factr": 1.0}, where="objective.surrogate")
    msg = str(err.value)
    assert "'objective.surrogate.factr'" in msg and "Did you mean 'factor'?" in msg


def test_invalid_value_is_a_config_error():
    with pytest.raises(ConfigError, match="factor must be > 0"):
        _reg().build("scaled", {"factor": -1.0}, where="x")


def test_duplicate_registration_rejected():
    reg = _reg()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("plain", paper="baseline")(type("Other", (), {}))


def test_dotted_path_imports_user_object():
    reg = _reg()
    entry = reg.get("collections:OrderedDict")
    assert entry.paper == "user-supplied"
    assert reg.build("collections.OrderedDict", {}) == {}
    with pytest.raises(ConfigError, match="cannot import module 'no_such_mod'"):
        reg.get("no_such_mod:thing")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        reg.get("collections:Nope")


# ---------------------------------------------------------------- item 3: hyperparameters against annotations
def _typed_reg():
    from typing import Literal

    reg = Registry("widget")

    @reg.register("typed", paper="baseline")
    class Typed:
        def __init__(self, *, rate: float = 0.5, limit: float = math.inf, n: int = 3, flag: bool = False,
                     mode: Literal["a", "b"] = "a", cap: float | None = None, w: tuple[float, float] = (1.0, 2.0),
                     names: list[str] | None = None, table: dict[str, float] | None = None, thing: object = None):
            self.__dict__.update(locals())

    return reg


def test_item3_typed_hyperparameters_accept_and_coerce():
    obj = _typed_reg().build("typed", {"rate": 1, "limit": math.inf, "n": 4, "flag": True, "mode": "b", "cap": 2,
                                       "w": [0, 1.5], "names": ["x"], "table": {"a": 1}, "thing": {"any": "thing"}})
    assert type(obj.rate) is float and obj.rate == 1.0 and obj.limit == math.inf
    assert obj.cap == 2.0 and type(obj.cap) is float and obj.w == (0.0, 1.5) and obj.table == {"a": 1.0}
    assert obj.mode == "b" and obj.flag is True and obj.names == ["x"] and obj.thing == {"any": "thing"}


@pytest.mark.parametrize("key, value, expected", [
    ("rate", "abc", "expected float (finite), got 'abc' (str)"),
    ("rate", math.nan, "expected float (finite), got nan (float)"),
    ("rate", math.inf, "expected float (finite), got inf (float)"),  # a finite default: inf is no limit here
    ("limit", math.nan, "expected float, got nan (float)"),  # an infinite default allows inf, never NaN
    ("n", 2.5, "expected int, got 2.5 (float)"),
    ("n", True, "expected int, got True (bool)"),
    ("flag", "yes", "expected bool, got 'yes' (str)"),
    ("mode", "c", "expected one of 'a', 'b', got 'c' (str)"),
    ("cap", "x", "expected float or None (finite), got 'x' (str)"),
    ("w", [1.0], "got [1.0] (list)"),
    ("names", "x", "got 'x' (str)"),
    ("table", {"a": "b"}, "got {'a': 'b'} (dict)"),
])
def test_item3_typed_hyperparameters_reject_naming_key_and_value(key, value, expected):
    with pytest.raises(ConfigError) as err:
        _typed_reg().build("typed", {key: value}, where="objective.surrogate")
    assert str(err.value).startswith(f"objective.surrogate.{key}: ") and expected in str(err.value)


def _every_entry():
    from entrolab.components import registries

    return [(stage, e) for stage, reg in registries().items() for e in reg]


@pytest.mark.parametrize("stage, entry", _every_entry(), ids=lambda x: getattr(x, "name", x))
def test_item3_every_component_default_passes_its_annotation(stage, entry):
    """Contract: each registered component's defaults fit its own annotations, so the check never
    rejects a recipe that only states defaults (and every float default is finite or a declared inf)."""
    hints = entry.annotations()
    for key, default in entry.params().items():
        if key == "**" or default is inspect.Parameter.empty or key not in hints:
            continue
        assert check_value(f"{stage}.{entry.name}.{key}", default, hints[key], default) == default
