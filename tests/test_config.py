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


# --------------------------------------------------------------------------- extends (recipe inheritance)
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BASE = """name: base
run_dir: runs/{name}
task: {name: countdown}
rollout: {group_size: 8, temperature: 0.7}
rewards:
  terms: [{name: verifier, weight: 1.0}, {name: format, weight: 0.5}]
advantage: {name: grpo, eps: 1.0e-6}
objective:
  surrogate: {name: ppo_clip, eps_low: 0.1, eps_high: 0.3}
optim: {lr: 1.0e-4}
"""


def test_extends_merges_mappings_key_by_key_and_replaces_lists(tmp_path):
    """rollout.group_size is replaced, its sibling temperature inherited; the terms list is replaced whole
    (not merged item by item); a same-name component block merges (eps_high kept from the base)."""
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\nrollout: {group_size: 4}\n"
                   "rewards: {terms: [{name: verifier, weight: 2.0}]}\n"
                   "objective: {surrogate: {eps_low: 0.2}}\n")
    rec = load_recipe(child)
    assert (rec.rollout.group_size, rec.rollout.temperature) == (4, 0.7)
    assert rec.rewards.terms == [{"name": "verifier", "weight": 2.0}]
    assert rec.objective.surrogate == {"name": "ppo_clip", "eps_low": 0.2, "eps_high": 0.3}
    assert rec.advantage == {"name": "grpo", "eps": 1e-6} and rec.optim.lr == 1e-4


def test_extends_other_component_name_replaces_the_block(tmp_path):
    """{name: rloo} over {name: grpo, eps: 1e-6} is {name: rloo}: hyperparameters of another component
    are never inherited (rloo takes no eps; a merge would also silently carry e.g. ppo_clip's eps)."""
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\nadvantage: {name: rloo}\n"
                   "objective: {surrogate: {name: reinforce}}\n")
    rec = load_recipe(child)
    assert rec.advantage == {"name": "rloo"} and rec.objective.surrogate == {"name": "reinforce"}
    build_components(rec)


def test_extends_name_is_the_extending_file_and_run_dir_follows(tmp_path):
    _write(tmp_path / "base.yaml", BASE)
    rec = load_recipe(_write(tmp_path / "my_method.yaml", "extends: base.yaml\n"))
    assert rec.name == "my_method" and rec.resolved_run_dir() == Path("runs/my_method")


def test_extends_chain_relative_to_each_file(tmp_path):
    """c extends ../b/b.yaml (relative to c's folder), which extends base.yaml (relative to b's): the
    nearest file wins key by key."""
    _write(tmp_path / "base.yaml", BASE)
    _write(tmp_path / "b" / "b.yaml", "extends: ../base.yaml\noptim: {lr: 3.0e-4}\nrollout: {group_size: 2}\n")
    c = _write(tmp_path / "c" / "c.yaml", "extends: ../b/b.yaml\noptim: {lr: 5.0e-4}\n")
    rec = load_recipe(c)
    assert (rec.optim.lr, rec.rollout.group_size, rec.rollout.temperature) == (5e-4, 2, 0.7)


def test_extends_delete_removes_an_inherited_key(tmp_path):
    """`eps_high: !delete` leaves ppo_clip's own default; deleting what no base sets is an error naming the
    file and the key, as is a !delete inside a new list."""
    _write(tmp_path / "base.yaml", BASE)
    rec = load_recipe(_write(tmp_path / "d.yaml",
                             "extends: base.yaml\nobjective:\n  surrogate:\n    eps_high: !delete\n"))
    assert rec.objective.surrogate == {"name": "ppo_clip", "eps_low": 0.1}
    bad = _write(tmp_path / "bad.yaml", "extends: base.yaml\nrollout:\n  top_p: !delete\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: 'rollout\.top_p: !delete', but no recipe it extends sets"):
        load_recipe(bad)
    in_list = _write(tmp_path / "in_list.yaml",
                     "extends: base.yaml\nrewards:\n  terms:\n    - name: verifier\n      weight: !delete\n")
    with pytest.raises(ConfigError, match=r"'rewards\.terms\.0\.weight: !delete' has nothing to delete"):
        load_recipe(in_list)
    rec = load_recipe(_write(tmp_path / "ov.yaml", "extends: base.yaml\n"), ["objective.surrogate.eps_low=!delete"])
    assert rec.objective.surrogate == {"name": "ppo_clip", "eps_high": 0.3}


def test_extends_cycle_names_the_chain(tmp_path):
    _write(tmp_path / "a.yaml", "extends: b.yaml\n")
    _write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"inheritance cycle: .*a\.yaml extends .*b\.yaml extends .*a\.yaml"):
        load_recipe(tmp_path / "a.yaml")
    _write(tmp_path / "self.yaml", "extends: self.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: .*self\.yaml extends .*self\.yaml"):
        load_recipe(tmp_path / "self.yaml")


def test_extends_errors_name_the_file_that_set_the_key(tmp_path):
    """A typo in the base is reported with the base's file, one in the child with the child's, a bad
    command-line value with 'command line'; a missing base names the file that extends it."""
    import re

    _write(tmp_path / "base.yaml", BASE.replace("group_size: 8", "group_sise: 8"))
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\noptim: {lrr: 1.0}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(child)
    msg = str(err.value)
    assert re.match(r"invalid recipe \S*child\.yaml \(extends \S*base\.yaml\):", msg), msg
    assert "unknown key 'rollout.group_sise' [from " in msg and "base.yaml]" in msg
    assert "unknown key 'optim.lrr' [from " in msg and "child.yaml]. Did you mean 'lr'?" in msg
    _write(tmp_path / "base.yaml", BASE)
    with pytest.raises(ConfigError, match=r"'rollout\.temperature' \[from the command line\]"):
        load_recipe(_write(tmp_path / "ok.yaml", "extends: base.yaml\n"),
                    ["rollout.temperature=-1"])
    with pytest.raises(ConfigError, match=r"recipe file not found: .*nope\.yaml \(extended by .*orphan\.yaml\)"):
        load_recipe(_write(tmp_path / "orphan.yaml", "extends: nope.yaml\n"))
    with pytest.raises(ConfigError, match=r"'extends' must be the path of one recipe file, got \['base.yaml'\]"):
        load_recipe(_write(tmp_path / "two.yaml", "extends: [base.yaml]\n"))
    with pytest.raises(ConfigError, match=r"'extends' must be the path of one recipe file, got None"):
        load_recipe(_write(tmp_path / "null.yaml", "extends:\n"))


def test_extends_overrides_apply_after_the_merge(tmp_path):
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\noptim: {lr: 3.0e-4}\n")
    rec = load_recipe(child, ["optim.lr=5e-4", "objective.surrogate.eps_high=0.28"])
    assert rec.optim.lr == 5e-4 and rec.objective.surrogate == {"name": "ppo_clip", "eps_low": 0.1, "eps_high": 0.28}


def test_extends_run_dir_recipe_is_resolved(tmp_path):
    """The trainer's recipe.yaml is the resolved recipe: no `extends`, the base's keys written out, and it
    loads back to the same Recipe."""
    from entrolab.trainer import Trainer

    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\noptim: {lr: 3.0e-4}\n")
    rec = load_recipe(child, [f"run_dir={tmp_path / 'run'}", "model.testbed_size=tiny", "train.steps=0",
                              "task.n_train=8", "task.n_validation=2", "task.n_test=2"])
    Trainer(rec, progress=False)
    text = (tmp_path / "run" / "recipe.yaml").read_text()
    saved = yaml.safe_load(text)
    assert "extends" not in saved
    assert saved["rollout"]["temperature"] == 0.7 and saved["optim"]["lr"] == 3e-4
    assert load_recipe(tmp_path / "run" / "recipe.yaml") == rec
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
