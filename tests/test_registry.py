"""Registry: lookup, errors that name valid choices, hyperparameter checks, dotted import paths."""

import pytest

from entrolab.registry import ConfigError, Registry


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
