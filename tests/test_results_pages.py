"""docs/results/*.md stay true to the code: the base model they were measured on, and no typed numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from entrolab.studies.pages import BLOCK_RE, HASH_RE, INLINE_RE, hand_typed_numbers
from entrolab.studies.plan import SETTINGS, STUDIES

PAGES = sorted((Path(__file__).resolve().parents[1] / "docs" / "results").glob("*.md"))
STUDY_PAGES = sorted({s.page for s in STUDIES.values()})


def current_base_hash() -> str:
    from entrolab.components import build_one, import_builtins
    from entrolab.demo import DEMO_RECIPE, DEMO_SFT
    from entrolab.registry import TASKS
    from entrolab.sft import base_settings_hash

    import_builtins()
    return base_settings_hash(build_one(TASKS, DEMO_RECIPE["task"], "task"), **DEMO_SFT)


@pytest.mark.parametrize("page", STUDY_PAGES)
def test_results_page_was_measured_on_the_current_default_base_model(page):
    """A change of the demo's base settings (or of its SFT data) makes every results page stale."""
    text = (PAGES[0].parent / page).read_text(encoding="utf-8")
    recorded = HASH_RE.findall(text)
    assert recorded, f"{page}: no 'Base model settings hash' in its provenance block; run `make results`"
    assert set(recorded) == {current_base_hash()}, (
        f"{page} was measured on base model {recorded} but the current default base is "
        f"{current_base_hash()}: re-run `make results`")


@pytest.mark.parametrize("page", STUDY_PAGES)
def test_no_number_on_a_results_page_is_typed_by_hand(page):
    text = (PAGES[0].parent / page).read_text(encoding="utf-8")
    assert hand_typed_numbers(text) == [], f"{page}: numbers outside generated sections"


@pytest.mark.parametrize("page", STUDY_PAGES)
def test_every_generated_marker_names_a_study_of_its_page(page):
    text = (PAGES[0].parent / page).read_text(encoding="utf-8")
    on_page = {n for n, s in STUDIES.items() if s.page == page}
    names = [m["name"] for m in BLOCK_RE.finditer(text)]
    assert "provenance" in names
    for name in names:
        head, _, kind = name.partition("/")
        if name == "provenance":
            continue
        if head == "setup":
            assert kind in SETTINGS, name
            continue
        assert head in on_page and re.fullmatch(r"table|paired|curve/.+", kind), name
    for m in INLINE_RE.finditer(text):
        head = m["key"].split("/", 1)[0]
        assert head == "base" or head in on_page, m["key"]
