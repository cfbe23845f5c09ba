"""The verl support table (no verl needed) and the engine columns of `entrolab list`."""

from __future__ import annotations

import re

import pytest

from entrolab.cli import main
from entrolab.components import registries
from entrolab.integrations.verl_support import AGG_MODES, SUPPORT, refusal, support


def test_every_registered_component_has_an_explicit_verl_decision():
    """A component added later cannot silently be listed (or refused) for verl without an entry here."""
    regs = registries()
    assert set(SUPPORT) == set(regs)
    for stage, reg in regs.items():
        assert set(SUPPORT[stage]) == set(reg.names()), stage
        for name in reg.names():
            s = support(stage, name)
            assert s == "yes" or (s.startswith("no: ") and len(s) > 10), (stage, name, s)


def test_support_answers_for_known_cases():
    assert support("surrogates", "clip_cov") == "yes"
    assert support("advantages", "grpo") == "yes"
    assert "entropy" in refusal("token_weights", "steer")
    assert "side_rollouts" in refusal("advantages", "aepo")
    assert support("surrogates", "mypkg.mod:Loss").startswith("no: 'mypkg.mod:Loss' has not been checked")
    assert support("nonstage", "x").startswith("no: stage 'nonstage'")
    assert set(AGG_MODES.values()) == {n for n, s in SUPPORT["aggregations"].items() if s == "yes"}


def _row(out: str, name: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if re.match(rf"^│ {re.escape(name)}\s+│", ln))
    return [c.strip() for c in line.strip("│").split("│")]


def test_list_shows_verl_and_trl_columns(capsys):
    assert main(["list", "surrogates"]) == 0
    out = capsys.readouterr().out
    header = next(ln for ln in out.splitlines() if "name" in ln and "paper" in ln)
    assert re.search(r"┃ verl\s+┃ TRL\s+┃$", header)
    try:
        from entrolab.integrations.trl_support import support as trl
    except ImportError:
        trl = None
    for name in ("clip_cov", "ppo_clip", "kl_cov"):
        row = _row(out, name)
        assert row[-2] == "yes"
        assert row[-1] == ("?" if trl is None else trl("surrogates", name).split(":", 1)[0])


def test_list_reasons_explain_each_verl_no(capsys):
    assert main(["list", "token_weights", "--reasons"]) == 0
    out = capsys.readouterr().out
    assert _row(out, "steer")[-2] == "no"
    assert "verl steer: needs the per-token entropy" in out
    assert "verl clip_v: needs the full-vocabulary logits" in out


@pytest.mark.parametrize("stage", ["advantages", "regularizers"])
def test_list_without_reasons_prints_no_reason_lines(capsys, stage):
    assert main(["list", stage]) == 0
    assert "verl aepo:" not in capsys.readouterr().out
