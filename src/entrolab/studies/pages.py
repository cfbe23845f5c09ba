"""Write the generated parts of docs/results/*.md from the finished study runs.

A page keeps its hand-written prose; what is measured lives between markers that this module
rewrites:

* a block ``<!-- begin generated: NAME -->`` … ``<!-- end generated: NAME -->``, NAME being
  ``provenance``, ``setup/<setting>``, ``<study>/table``, ``<study>/paired`` or
  ``<study>/curve/<training metric>``;
* an inline value ``<!--v:KEY-->…<!--/v-->`` inside prose, KEY being ``base/<eval metric>`` or
  ``<study>/<key of tables.value>`` (e.g. ``entropy/clip_b/diff/pass@kmax``).

An unknown NAME or KEY is an error naming the page, so a page cannot silently keep a stale number.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from entrolab.studies.plan import STUDIES, Study
from entrolab.studies.tables import StudyData, curve_table, fmt, load_study, main_table, paired_table, value

BLOCK_RE = re.compile(r"(<!-- begin generated: (?P<name>[^ ]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
                      re.S)
INLINE_RE = re.compile(r"<!--v:(?P<key>[^>]+?)-->(?P<body>.*?)<!--/v-->", re.S)
HASH_RE = re.compile(r"Base model settings hash: `([0-9a-f]+)`")


def replace_generated(text: str, block: Callable[[str], str], inline: Callable[[str], str], *, page: str) -> str:
    """Rewrite every generated block and inline value of ``text``; errors name ``page`` and the marker."""
    def sub_block(m: re.Match) -> str:
        try:
            body = block(m["name"])
        except KeyError as err:
            raise ValueError(f"{page}: generated block '{m['name']}': {err.args[0]}") from None
        return m.group(1) + body.rstrip("\n") + "\n" + m.group(4)

    def sub_inline(m: re.Match) -> str:
        try:
            return f"<!--v:{m['key']}-->{inline(m['key'])}<!--/v-->"
        except (KeyError, ValueError) as err:
            raise ValueError(f"{page}: inline value '{m['key']}': {err.args[0]}") from None

    begins = re.findall(r"<!-- begin generated: ([^ ]+) -->", text)
    ends = re.findall(r"<!-- end generated: ([^ ]+) -->", text)
    if sorted(begins) != sorted(ends):
        raise ValueError(f"{page}: unbalanced generated markers (begin {begins}, end {ends})")
    return INLINE_RE.sub(sub_inline, BLOCK_RE.sub(sub_block, text))


def hand_typed_numbers(text: str) -> list[str]:
    """Decimal numbers of ``text`` outside generated blocks and inline values (there should be none)."""
    rest = INLINE_RE.sub("", BLOCK_RE.sub("", text))
    return re.findall(r"(?<![\w.])\d+\.\d+", rest)


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else ("es" if word.endswith(("h", "s")) else "s"))


def setup_block(studies: list[StudyData], setting: str, base: Path) -> str:
    """The run settings of ``setting``, read from the recipe its baseline run actually resolved."""
    from entrolab.config import load_recipe

    runs = [sd.runs[sd.baseline][0] for sd in studies if sd.study.setting == setting]
    if not runs:
        raise KeyError(f"no study of setting '{setting}' on this page")
    r = load_recipe(str(runs[0] / "recipe.yaml"), [])
    sft = json.loads((base / "sft.json").read_text())
    batch = r.rollout.prompts_per_step * r.rollout.group_size
    mini = r.train.mini_batch_size or batch
    return (f"Every run: {r.train.steps} steps × {r.rollout.prompts_per_step} prompts × {r.rollout.group_size} samples "
            f"(temperature {r.rollout.temperature:g}, at most {r.rollout.max_new_tokens} new tokens) from the "
            f"`train` split, learning rate {r.optim.lr:g}, {_n(r.train.updates_per_batch, 'pass')} over each batch "
            f"in {_n(batch // mini, 'mini-batch')} of {mini}; final evaluation on {r.eval.num_prompts} "
            f"`{r.eval.split}` prompts × {r.eval.n_samples} samples at temperature {r.eval.temperature:g}. Base "
            f"model: a {sft['num_params']:,}-parameter char-level Llama (`{sft['settings']['size']}`), trained from "
            f"scratch by SFT for {sft['settings']['steps']} steps on the `{sft.get('split', 'sft')}` split of "
            f"Countdown, disjoint from the RL `train` split.")


def provenance_block(root: Path, studies: list[StudyData], base: Path, base_eval: dict[str, Any]) -> str:
    infos = [json.loads((rd / "study.json").read_text()) for sd in studies for dirs in sd.runs.values() for rd in dirs]
    commits = sorted({(i["commit"] or "unknown")[:12] + (" (uncommitted changes)" if i["dirty"] else "")
                      for i in infos})
    cmds = [json.loads(x) for x in (root / "commands.jsonl").read_text().splitlines() if x.strip()] \
        if (root / "commands.jsonl").exists() else []
    machines = sorted({i["machine"] for i in infos if i.get("machine")} | {c["machine"] for c in cmds})
    if not machines:  # runs recorded before study.json carried the machine: this one wrote the tables
        from entrolab.studies.plan import machine
        machines = [f"{machine()} (the machine that wrote the tables)"]
    s = base_eval["summary"]
    sft = json.loads((base / "sft.json").read_text())
    seeds = sorted({x for sd in studies for x in sd.seeds})
    run_s = sum(i["wall_s"] for i in infos)
    lines = [
        f"- Command: `make results` (= `python benchmarks/results.py all --seeds {' '.join(map(str, seeds))} "
        f"--jobs 2`); runs under `runs/studies/`, each reused when finished.",
        f"- Code: commit {', '.join(f'`{c}`' for c in commits)} (recorded by every run).",
        f"- Base model settings hash: `{sft['settings_hash']}` (the demo's cached Countdown base, "
        f"`{base.name}`); its own evaluation: " + ", ".join(
            f"{k} {fmt(s[k])}" for k in ("pass@1", "pass@8", "pass@64", "answer_entropy", "token_entropy",
                                         "distinct_correct_mean") if s.get(k) is not None) + ".",
        f"- Seeds: {', '.join(f'{sd.study.name} {len(sd.seeds)}' for sd in studies)}; baseline of the "
        f"paired differences: `{studies[0].baseline}` on the same seeds.",
        f"- Machine: {'; '.join(machines)}; one torch thread per run, 2 runs side by side.",
        f"- Wall time: {run_s / 60:.0f} min of run time for this page's {len(infos)} runs"
        + (f"; the whole `results.py run` took {sum(c['wall_s'] for c in cmds) / 60:.0f} min for every page"
           if cmds else "") + f"; tables written {time.strftime('%Y-%m-%d', time.gmtime())}.",
    ]
    return "\n".join(lines)


def _block_fn(root: Path, page_studies: list[StudyData], base: Path,
              base_eval: dict[str, Any]) -> Callable[[str], str]:
    by_name = {sd.study.name: sd for sd in page_studies}

    def block(name: str) -> str:
        if name == "provenance":
            return provenance_block(root, page_studies, base, base_eval)
        if name.startswith("setup/"):
            return setup_block(page_studies, name.split("/", 1)[1], base)
        study, _, kind = name.partition("/")
        if study not in by_name:
            raise KeyError(f"no study '{study}' on this page")
        sd = by_name[study]
        if kind == "table":
            return main_table(sd)
        if kind == "paired":
            return paired_table(sd)
        if kind.startswith("curve/"):
            return curve_table(sd, kind[len("curve/"):])
        raise KeyError(f"unknown block kind '{kind}'")
    return block


def _inline_fn(by_name: dict[str, StudyData], base_eval: dict[str, Any]) -> Callable[[str], str]:
    def inline(key: str) -> str:
        head, _, rest = key.partition("/")
        if head == "base":
            v = base_eval["summary"].get(rest)
            if v is None:
                raise KeyError(f"base evaluation has no '{rest}'")
            return fmt(v)
        if head not in by_name:
            raise KeyError(f"no study '{head}' on this page")
        return value(by_name[head], rest)
    return inline


def render_page(text: str, *, page: str, repo: Path, root: Path, studies: list[StudyData], base: Path,
                base_eval: dict[str, Any]) -> str:
    by_name = {sd.study.name: sd for sd in studies}
    return replace_generated(text, _block_fn(root, studies, base, base_eval),
                             _inline_fn(by_name, base_eval), page=page)


def write_pages(repo: Path, root: Path, *, studies: list[str] | None = None, seeds: list[int],
                base: Path, base_eval: dict[str, Any]) -> list[Path]:
    """Regenerate every results page that holds one of ``studies`` (default: all)."""
    names = studies or list(STUDIES)
    pages: dict[str, list[Study]] = {}
    for n in names:
        pages.setdefault(STUDIES[n].page, []).append(STUDIES[n])
    written = []
    for page, page_studies in pages.items():
        path = repo / "docs" / "results" / page
        data = [load_study(root, s, seeds, base_eval) for s in page_studies]
        text = path.read_text(encoding="utf-8")
        new = render_page(text, page=str(path), repo=repo, root=root, studies=data, base=base, base_eval=base_eval)
        path.write_text(new, encoding="utf-8")
        written.append(path)
    return written
