"""Every method recipe is GRPO plus its method: the resolved recipe differs from ``recipes/grpo.yaml``
exactly in the blocks its method page names on its ``Recipe `recipes/<x>.yaml` changes only ...`` line."""

import re
from pathlib import Path

import pytest

from entrolab.config import load_recipe, yaml_load

ROOT = Path(__file__).parents[1]
BASELINE = ROOT / "recipes" / "grpo.yaml"
METHODS = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if p != BASELINE)
LINE = re.compile(r"^Recipe `recipes/([\w.-]+\.yaml)` changes only (.+) from `recipes/grpo\.yaml`\.$")
# blocks are named at this depth: a component (`advantage`) or a slot of `objective`/`rewards`
DEEP = ("objective", "rewards")


def page_claims() -> dict[str, list[tuple[str, list[str]]]]:
    """recipe file name → [(page, named blocks)] from every docs/methods page."""
    claims: dict[str, list[tuple[str, list[str]]]] = {}
    for page in sorted((ROOT / "docs" / "methods").glob("*.md")):
        for line in page.read_text().splitlines():
            m = LINE.match(line)
            if m:
                claims.setdefault(m.group(1), []).append((page.name, re.findall(r"`([\w.]+)`", m.group(2))))
    return claims


def changed_blocks(recipe: dict, base: dict) -> set[str]:
    """Blocks whose resolved value differs (``name``/``run_dir`` identify the run and always differ)."""
    out = set()
    for key in recipe.keys() | base.keys():
        if key in ("name", "run_dir") or recipe.get(key) == base.get(key):
            continue
        if key in DEEP:
            out |= {f"{key}.{s}" for s in recipe[key].keys() | base[key].keys()
                    if recipe[key].get(s) != base[key].get(s)}
        else:
            out.add(key)
    return out


def test_changed_blocks_is_exact_on_a_hand_case():
    base = {"name": "a", "advantage": {"name": "grpo"}, "objective": {"surrogate": {"name": "ppo_clip"},
                                                                       "regularizers": []}, "seed": 0}
    rec = {"name": "b", "advantage": {"name": "grpo"}, "objective": {"surrogate": {"name": "ppo_clip"},
                                                                      "regularizers": [{"name": "x"}]}, "seed": 1}
    assert changed_blocks(rec, base) == {"objective.regularizers", "seed"}


@pytest.mark.parametrize("path", METHODS, ids=[p.stem for p in METHODS])
def test_method_recipe_differs_from_grpo_only_in_the_blocks_its_page_names(path):
    claims = page_claims().get(path.name, [])
    assert len(claims) == 1, (f"{path.name}: want exactly one line 'Recipe `recipes/{path.name}` changes only "
                              f"`<block>`, ... from `recipes/grpo.yaml`.' in docs/methods/, found {claims}")
    page, named = claims[0]
    got = changed_blocks(load_recipe(path).model_dump(mode="json"), load_recipe(BASELINE).model_dump(mode="json"))
    assert got == set(named), (f"{path.name} differs from grpo.yaml in {sorted(got)}, "
                               f"docs/methods/{page} names {sorted(named)}")


@pytest.mark.parametrize("path", METHODS, ids=[p.stem for p in METHODS])
def test_method_recipe_is_a_delta_whose_chain_ends_at_grpo(path):
    """Each method recipe says `extends:` (no copy of the preset) and its chain reaches recipes/grpo.yaml."""
    seen, cur = [], path
    while cur != BASELINE:
        seen.append(cur.name)
        parent = yaml_load(cur.read_text()).get("extends")
        assert parent, f"{' → '.join(seen)} does not extend another recipe"
        cur = (cur.parent / parent).resolve()
        assert cur.parent == BASELINE.parent and len(seen) < 10, f"{' → '.join(seen)} leaves recipes/"
    assert "extends" not in yaml_load(BASELINE.read_text())


def test_page_lines_name_existing_recipes():
    names = {p.name for p in METHODS}
    assert set(page_claims()) <= names, set(page_claims()) - names
