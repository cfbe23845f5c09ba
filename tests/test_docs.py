"""Issue 8, item 17: the docs say what the code does and point only at files inside the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# [text](target) and [text]: target; images too. Code spans are removed first (they show syntax).
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def relative_links(text: str) -> list[str]:
    """Link targets that are paths (no scheme, no pure #anchor), anchors and queries cut off."""
    text = CODE.sub("", text)
    out = []
    for target in [a or b for a, b in INLINE.findall(text)] + REFDEF.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto: ... or a link inside the same page
        out.append(unquote(target.split("#")[0].split("?")[0]))
    return out


def test_item17_link_finder_sees_what_it_must():
    text = ("[a](docs/x.md) ![img](../y.png) [b](https://e.org) [c](#top) [d](<z w.md>)\n"
            "`[not](a/link.md)`\n[ref]: ../outside.md\n")
    assert relative_links(text) == ["docs/x.md", "../y.png", "z w.md", "../outside.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_item17_every_relative_link_resolves_inside_the_repo(doc):
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path = (ROOT / target.lstrip("/")) if target.startswith("/") else (doc.parent / target)
        path = path.resolve()
        assert path.is_relative_to(ROOT), f"{doc.relative_to(ROOT)}: link '{target}' leaves the repository"
        assert path.exists(), f"{doc.relative_to(ROOT)}: link '{target}' points at a missing file"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_item17_no_doc_points_at_the_shared_folder(doc):
    """Docs must stand alone: nothing outside the repository (a sibling ``shared/`` folder) is cited."""
    text = doc.read_text(encoding="utf-8")
    for bad in ("../shared", "/work/shared"):
        assert bad not in text, f"{doc.relative_to(ROOT)} mentions {bad}"
    # A path written as code (`../x/y.md`) is a reference too, even if not a link.
    for target in re.findall(r"`(\.\./[^`\s]+)`", text):
        assert (doc.parent / target).resolve().is_relative_to(ROOT), \
            f"{doc.relative_to(ROOT)}: '{target}' is outside the repository"


def test_item17_sft_cli_samples_the_sft_split(tmp_path):
    """README: the base model imitates the task's `sft` split, disjoint from RL's `train` split.

    `entrolab sft` with its defaults must do that: its config says split `sft`, the default task has
    an `sft` split, and the model trained by `run_sft` records `sft` in sft.json with the settings
    hash of the `sft` split's demonstrations (the hash covers the pairs themselves).
    """
    from entrolab.components import build_one, import_builtins
    from entrolab.registry import TASKS
    from entrolab.sft import _settings_hash, demonstration_pairs, load_sft_cfg, run_sft

    import_builtins()
    assert load_sft_cfg(None).split == "sft" and load_sft_cfg(None).task["n_sft"] > 0
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`sft` split" in readme and "disjoint `train` split" in readme
    task_cfg = {"name": "countdown", "min_numbers": 3, "max_numbers": 3, "n_train": 5, "n_validation": 1,
                "n_test": 1, "n_sft": 6}
    cfg = load_sft_cfg({"task": task_cfg, "steps": 1, "batch_size": 2, "warmup": 0, "device": "cpu",
                        "demos_per_prompt": 1, "out_dir": str(tmp_path / "base")})
    meta = json.loads((run_sft(cfg, progress=None) / "sft.json").read_text())
    task = build_one(TASKS, task_cfg, "task")
    settings = dict(size=cfg.size, steps=1, batch_size=2, lr=cfg.lr, warmup=0, weight_decay=cfg.weight_decay,
                    schedule=cfg.schedule, demos_per_prompt=1, seed=0)
    pairs = {s: demonstration_pairs(task, demos_per_prompt=1, seed=0, split=s) for s in ("sft", "train")}
    assert {p for p, _ in pairs["sft"]}.isdisjoint({p for p, _ in pairs["train"]})
    assert meta["split"] == "sft"
    assert meta["settings_hash"] == _settings_hash(settings, task.charset(), pairs["sft"])
