"""Recipe schema: strict keys with 'did you mean', overrides, round trip, every shipped recipe builds."""

from pathlib import Path

import pytest
import yaml

from entrolab.components import build_components
from entrolab.config import Recipe, apply_overrides, load_recipe, parse_override
from entrolab.registry import ConfigError

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def test_unknown_top_level_key_names_closest():
    with pytest.raises(ConfigError) as err:
        load_recipe({"rollot": {}})
    assert "unknown key 'rollot'" in str(err.value) and "Did you mean 'rollout'?" in str(err.value)


def test_unknown_nested_key_names_dotted_path():
    with pytest.raises(ConfigError) as err:
        load_recipe({"rollout": {"group_sise": 4}})
    msg = str(err.value)
    assert "unknown key 'rollout.group_sise'" in msg and "Did you mean 'group_size'?" in msg


def test_bad_value_names_path():
    with pytest.raises(ConfigError, match="'rollout.temperature'"):
        load_recipe({"rollout": {"temperature": -1}})


def test_component_hyperparameter_typo_caught_at_build():
    rec = load_recipe({"objective": {"surrogate": {"name": "ppo_clip", "eps_hihg": 0.3}}})
    with pytest.raises(ConfigError) as err:
        build_components(rec)
    assert "objective.surrogate.eps_hihg" in str(err.value) and "eps_high" in str(err.value)


def test_unknown_component_lists_names():
    rec = load_recipe({"advantage": "grpoo"})
    with pytest.raises(ConfigError, match="Did you mean 'grpo'"):
        build_components(rec)


def test_parse_override_yaml_values():
    assert parse_override("optim.lr=1e-4") == (["optim", "lr"], 1e-4)
    assert parse_override("train.bf16=false") == (["train", "bf16"], False)
    assert parse_override("objective.surrogate.name=reinforce") == (["objective", "surrogate", "name"], "reinforce")
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("optim.lr")


def test_overrides_nested_and_list_index():
    data = {"rewards": {"terms": [{"name": "verifier", "weight": 1.0}]}}
    out = apply_overrides(data, ["rewards.terms.0.weight=0.5", "rollout.group_size=4"])
    assert out["rewards"]["terms"][0]["weight"] == 0.5 and out["rollout"]["group_size"] == 4
    assert data["rewards"]["terms"][0]["weight"] == 1.0  # input untouched
    with pytest.raises(ConfigError, match="out of range"):
        apply_overrides(data, ["rewards.terms.3.weight=1"])


def test_yaml_round_trip(tmp_path):
    rec = load_recipe({"name": "x", "optim": {"lr": 3e-4}, "advantage": "rloo"})
    p = tmp_path / "r.yaml"
    p.write_text(rec.to_yaml())
    again = load_recipe(p)
    assert again == rec and again.advantage == {"name": "rloo"}


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_and_builds(path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict)
    rec = load_recipe(path)
    assert isinstance(rec, Recipe)
    build_components(rec)


# ---------------------------------------------------------------- item 3: values that validate but train wrong
@pytest.mark.parametrize("override, key, why", [
    ("optim.grad_clip=-1", "optim.grad_clip", "greater than 0"),  # clip_grad_norm_ would flip the gradient
    ("optim.grad_clip=0", "optim.grad_clip", "greater than 0"),
    ("optim.grad_clip=.nan", "optim.grad_clip", "finite"),
    ("optim.lr=.inf", "optim.lr", "finite"),
    ("optim.eps=.nan", "optim.eps", "finite"),
    ("optim.eps=0", "optim.eps", "greater than 0"),
    ("optim.betas=[.nan, 0.99]", "optim.betas.0", "finite"),
    ("optim.betas=[0.9, 1.0]", "optim.betas.1", "less than 1"),
    ("optim.betas=[-0.1, 0.9]", "optim.betas.0", "greater than or equal to 0"),
    ("optim.weight_decay=.inf", "optim.weight_decay", "finite"),
    ("rollout.temperature=.inf", "rollout.temperature", "finite"),
    ("rollout.top_p=.nan", "rollout.top_p", "finite"),
    ("eval.temperature=.nan", "eval.temperature", "finite"),
])
def test_item3_schema_rejects_nonfinite_and_out_of_range(override, key, why):
    with pytest.raises(ConfigError) as err:
        load_recipe(None, [override])
    assert f"'{key}'" in str(err.value) and why in str(err.value)


def test_item3_schema_keeps_valid_edge_values():
    rec = load_recipe(None, ["optim.grad_clip=null", "optim.betas=[0.0, 0.999]", "optim.weight_decay=0"])
    assert rec.optim.grad_clip is None and rec.optim.betas == (0.0, 0.999)


@pytest.mark.parametrize("override, key", [("lr=.inf", "lr"), ("lr=.nan", "lr"), ("weight_decay=.inf", "weight_decay")])
def test_item3_sft_config_rejects_nonfinite(override, key):
    from entrolab.sft import load_sft_cfg

    with pytest.raises(ConfigError, match=f"'{key}': Input should be a finite number"):
        load_sft_cfg(None, [override])


@pytest.mark.parametrize("value, shown", [("abc", "'abc' (str)"), (".nan", "nan (float)"), (".inf", "inf (float)"),
                                          ("true", "True (bool)"), ("[0.2]", "[0.2] (list)")])
def test_item3_component_hyperparameter_type_names_key_and_value(value, shown):
    rec = load_recipe(None, ["objective.surrogate.name=ppo_clip", f"objective.surrogate.eps_high={value}"])
    with pytest.raises(ConfigError) as err:
        build_components(rec)
    assert str(err.value) == f"objective.surrogate.eps_high: expected float (finite), got {shown}"


def test_item3_int_hyperparameter_becomes_float():
    rec = load_recipe(None, ["objective.surrogate.name=ppo_clip", "objective.surrogate.eps_high=1",
                             "objective.surrogate.dual_clip_c=3"])
    sur = build_components(rec).surrogate
    assert type(sur.eps_high) is float and sur.eps_high == 1.0 and type(sur.dual_clip_c) is float


def test_item3_reward_weight_type_names_key():
    rec = load_recipe({"rewards": {"terms": [{"name": "verifier", "weight": "abc"}]}})
    with pytest.raises(ConfigError, match=r"rewards.terms.0.weight: expected float \(finite\), got 'abc' \(str\)"):
        build_components(rec)


def test_item3_validate_cli_names_bad_hyperparameter(capsys):
    from entrolab.cli import main

    assert main(["validate", "recipes/grpo.yaml", "objective.surrogate.eps_high=abc"]) == 2
    assert "objective.surrogate.eps_high: expected float (finite), got 'abc' (str)" in capsys.readouterr().err


# ---------------------------------------------------------------- item 9: group-relative components need groups
def test_item9_build_refuses_group_estimator_with_group_of_one():
    with pytest.raises(ConfigError) as err:
        build_components(load_recipe(None, ["rollout.group_size=1"]))  # default advantage: grpo
    msg = str(err.value)
    assert "advantage 'grpo'" in msg and "rollout.group_size >= 2" in msg and "rollout.group_size=1" in msg
    build_components(load_recipe(None, ["rollout.group_size=2"]))  # the smallest group that compares


def test_item9_instance_level_requirement_names_reward_term():
    """The likelihood reward needs groups only in its JEPO (leave-one-out) form."""
    jepo = {"rollout": {"group_size": 1}, "advantage": "raw",
            "rewards": {"terms": [{"name": "likelihood", "form": "jepo"}]}}
    with pytest.raises(ConfigError, match=r"rewards.terms.0 'likelihood' .* rollout.group_size >= 2"):
        build_components(load_recipe(jepo))
    jepo["rewards"]["terms"][0]["form"] = "logprob"
    build_components(load_recipe(jepo))


def test_item9_partial_loss_is_a_warning():
    with pytest.warns(UserWarning, match=r"advantage 'copo': with rollout.group_size=1 its within-group part"):
        build_components(load_recipe(None, ["rollout.group_size=1", "advantage.name=copo"]))


def test_item9_validate_cli_refuses_group_of_one(capsys):
    from entrolab.cli import main

    assert main(["validate", "recipes/grpo.yaml", "rollout.group_size=1"]) == 2
    err = capsys.readouterr().err
    assert "advantage 'grpo'" in err and "rollout.group_size=1" in err
