"""docs/methods/oni.md states the ONI term's defaults (kept out of test_rewards_oni.py: the mutation
runner copies src/ and tests/ only, not docs/)."""

import inspect
import re
from pathlib import Path

import yaml

from entrolab.rewards.oni import OniReward


def test_defaults_are_the_ones_the_method_page_lists():
    """docs/methods/oni.md's Parameters paragraph states every default of the term."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "methods" / "oni.md").read_text()
    para = page.split("## Parameters", 1)[1].split("##", 1)[0]
    doc = {k: yaml.safe_load(v) for k, v in re.findall(r"`(\w+) ([^`]+)`", para)}
    sig = {k: p.default for k, p in inspect.signature(OniReward).parameters.items()}
    assert doc == sig
