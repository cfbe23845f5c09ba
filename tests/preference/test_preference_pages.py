"""Every preference loss has a method page (kept apart from the contract tests, which the mutation
runner copies without docs/)."""

from __future__ import annotations

import re
from pathlib import Path

from entrolab.components import import_builtins
from entrolab.registry import PREFERENCE_LOSSES

ROOT = Path(__file__).resolve().parents[2]


def test_every_loss_has_a_method_page_naming_it_in_its_title():
    """docs/methods/<page>.md whose first line names the entry in backticks (e.g. `cpl_ranked`)."""
    import_builtins()
    titles = {p.name: p.read_text(encoding="utf-8").splitlines()[0] for p in (ROOT / "docs/methods").glob("*.md")}
    for name in PREFERENCE_LOSSES.names():
        pages = [p for p, t in titles.items() if re.search(rf"`{name}`", t)]
        assert pages, f"no docs/methods page has `{name}` in its title"
