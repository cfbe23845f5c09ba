"""``diagnose``: read rollouts / eval JSONs / run directories and write the diagnostics report.

Writes ``out_dir/diagnostics.json`` (every number, NaN as null) and ``out_dir/index.html`` (a
self-contained page with a plot for every section that has data). A section whose inputs are
missing is listed under ``disabled`` with the reason, in the JSON and on the page. Definitions of
every section: docs/diagnostics.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from entrolab.diagnostics import figures
from entrolab.diagnostics import sections_models as sm
from entrolab.diagnostics import sections_rewards as sr
from entrolab.diagnostics import sections_steps as ss
from entrolab.diagnostics.inputs import Dataset, load_dataset
from entrolab.diagnostics.tables import section_tables
from entrolab.report.html import Page

#: Section name → (title, one-line description) in report order.
SECTIONS: dict[str, tuple[str, str]] = {
    "passk": ("pass@k", "Unbiased pass@k (Chen et al. 2021) per model with bootstrap bands over prompts; crossover k vs the base."),
    "support": ("Support change", "Invisible Leash: correct answers found by base vs trained; SRR, NDR, SDS, NSCR; coverage of enumerable solution sets."),
    "answer_entropy": ("Answer- and token-level entropy per model", "Entropy of the empirical answer distribution per prompt, averaged; token entropy over valid tokens."),
    "entropy_steps": ("Entropy over steps", "Token entropy, its spread over samples, answer entropy and per-phase entropy at each step."),
    "mechanism": ("Entropy mechanism", "Per-token covariance of log-prob and advantage per step; measured ΔH vs −Cov."),
    "law": ("Entropy–performance law", "Fit of R = −a·exp(H) + b on early steps; ceiling b − a; error on held-out later steps."),
    "discriminator": ("Entropy discriminator", "S = p·(H + log p) per step (Entropy Dynamics)."),
    "clipping": ("Clipping", "PPO clip fractions and the clipping bias per step."),
    "rank": ("Hidden-state effective rank", "ER / ERV / ERA over steps."),
    "bon": ("Best-of-N vs KL", "Exact best-of-N KL (with ties) and reward, the KL-optimal tilt at the same KL, the trained models."),
    "cliff": ("Policy cliff", "TV distance per unit reward perturbation δ between two runs; near-optimal set size."),
    "starc": ("Reward-function distance (STARC)", "Canonicalise, normalise, L2 distance; 0 for shaped / positively scaled rewards."),
    "preference": ("Preference consistency", "Majority-preference cycle rate and disagreement entropy across reward functions."),
}


def choose_base(data: Dataset, base: str | None) -> str | None:
    """The base model's run label: ``base`` if given, else a run named 'base', else one whose name
    contains 'base', else the first run loaded; None when only one run was loaded."""
    runs = data.runs()
    if base is not None:
        if base not in runs:
            raise ValueError(f"base model '{base}' is not among the loaded runs: {', '.join(runs)}")
        return base
    if len(runs) < 2:
        return None
    for pick in (lambda r: r.lower() == "base", lambda r: "base" in r.lower()):
        hits = [r for r in runs if pick(r)]
        if hits:
            return hits[0]
    return runs[0]


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf floats → None, tuples → lists, keys → str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def compute(data: Dataset, *, base: str | None, seed: int = 0, n_boot: int = 1000, zeta: float = 0.05,
            clip_eps_low: float = 0.2, clip_eps_high: float = 0.2, dual_clip_c: float | None = 3.0) -> dict[str, Any]:
    """Every section's result; returns the report dict (before NaN cleaning)."""
    jobs: dict[str, Callable[[], tuple[dict | None, str | None]]] = {
        "passk": lambda: sm.passk_section(data, base, n_boot=n_boot, seed=seed),
        "support": lambda: sm.support_section(data, base, zeta=zeta),
        "answer_entropy": lambda: sm.answer_entropy_section(data),
        "entropy_steps": lambda: ss.entropy_steps_section(data),
        "mechanism": lambda: ss.mechanism_section(data),
        "law": lambda: ss.law_section(data),
        "discriminator": lambda: ss.discriminator_section(data),
        "clipping": lambda: ss.clipping_section(data, eps_low=clip_eps_low, eps_high=clip_eps_high, dual_clip_c=dual_clip_c),
        "rank": lambda: ss.rank_section(data),
        "bon": lambda: sm.bon_section(data, base),
        "cliff": lambda: sm.cliff_section(data),
        "starc": lambda: sr.starc_section(data),
        "preference": lambda: sr.preference_section(data),
    }
    sections, disabled = {}, {}
    for name, job in jobs.items():
        result, reason = job()
        if result is None:
            disabled[name] = reason
        else:
            sections[name] = result
    models = [{"run": m.run, "step": m.step, "source": m.source, "num_prompts": len(m.groups),
               "num_samples": sum(g.n for g in m.groups.values()), "n_min": min(g.n for g in m.groups.values()),
               "eval_label": m.eval_label} for m in data.models.values()]
    return {"inputs": {"sources": data.sources, "run_dirs": data.run_dirs, "models": models, "base": base,
                       "seed": seed, "notes": data.notes},
            "sections": sections, "disabled": disabled}


def diagnose(paths: list[Path], out_dir: Path, *, seed: int = 0, base: str | None = None, n_boot: int = 1000,
             zeta: float = 0.05, clip_eps_low: float = 0.2, clip_eps_high: float = 0.2,
             dual_clip_c: float | None = 3.0) -> Path:
    """Write ``out_dir/diagnostics.json`` and ``out_dir/index.html`` for the given inputs.

    Args:
        paths: rollout ``.jsonl`` files, eval ``.json`` files and/or run directories.
        out_dir: output folder (created).
        seed: seed of the pass@k bootstrap (the report is reproducible given inputs and seed).
        base: run label of the base model (default: see :func:`choose_base`).
        n_boot: bootstrap replicates of the pass@k bands.
        zeta: miss probability defining the empirical-support threshold ε = 1 − ζ^{1/k}.
        clip_eps_low, clip_eps_high, dual_clip_c: the PPO clip settings the clipping stats assume.
    Returns: the path of ``index.html``.
    """
    out_dir = Path(out_dir)
    data = load_dataset(list(paths))
    report = clean(compute(data, base=choose_base(data, base), seed=seed, n_boot=n_boot, zeta=zeta,
                           clip_eps_low=clip_eps_low, clip_eps_high=clip_eps_high, dual_clip_c=dual_clip_c))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "diagnostics.json").write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")
    return write_page(report, out_dir)


def _figures(name: str, result: dict, fig_dir: Path) -> list[Path]:
    if name == "passk":
        return figures.passk_figure(result, fig_dir)
    if name == "support":
        return figures.support_figure(result, fig_dir)
    if name == "entropy_steps":
        return figures.entropy_figure(result, fig_dir)
    if name == "mechanism":
        return figures.covariance_figure(result, fig_dir) + figures.steps_figure(
            result_steps(result), fig_dir, keys=["cov_mean"], name="cov_mean", title="mean covariance over steps",
            ylabel="Cov(log π, A) per token (nats × adv.)")
    if name == "law":
        return figures.law_figure(result, fig_dir)
    if name == "discriminator":
        return figures.steps_figure(result, fig_dir, keys=["mean", "clip_b_frac"], name="discriminator", title="entropy discriminator S",
                                     ylabel="S (nats) / fraction of tokens")
    if name == "clipping":
        return figures.steps_figure(result, fig_dir, keys=["clipfrac_low", "clipfrac_high", "clipfrac_dual"], name="clipping", title="clip fractions",
                                     ylabel="fraction of valid tokens")
    if name == "rank":
        return figures.rank_figure(result, fig_dir)
    if name == "bon":
        return figures.bon_figure(result, fig_dir)
    if name == "answer_entropy":
        return figures.answer_entropy_figure(result, fig_dir)
    if name == "cliff":
        return figures.cliff_figure(result, fig_dir)
    if name == "starc":
        return figures.starc_figure(result, fig_dir)
    if name == "preference":
        return figures.preference_figure(result, fig_dir)
    return []


def result_steps(result: dict) -> dict:
    """The mechanism section's per-step rows in the ``{"runs": {run: rows}}`` shape."""
    return {"runs": {run: res["steps"] for run, res in result["runs"].items()}}


def write_page(report: dict, out_dir: Path) -> Path:
    """Render the report dict as ``out_dir/index.html`` (figures under ``out_dir/figures``)."""
    page = Page("entrolab diagnostics")
    inputs = report["inputs"]
    page.para("Inputs: " + ", ".join(inputs["sources"]))
    page.table([[m["run"], m["step"], m["source"] + (f" ({m['eval_label']})" if m.get("eval_label") else ""),
                 m["num_prompts"], m["num_samples"], m["n_min"]] for m in inputs["models"]],
               header=["run", "step", "source", "prompts", "samples", "min samples / prompt"])
    for note in inputs.get("notes", []):
        page.para(note, muted=True)
    page.para(f"Base model: {inputs['base'] or '— (a single run: comparisons skipped)'}; seed {inputs['seed']}.")
    for name, (title, desc) in SECTIONS.items():
        page.h2(title).para(desc, muted=True)
        if name in report["disabled"]:
            page.para(f"Disabled: {report['disabled'][name]}.", muted=True)
            continue
        result = report["sections"][name]
        for png in _figures(name, result, out_dir / "figures"):
            page.image(png, alt=f"{title} plot")
        tables = section_tables(name, result)
        for header, rows in tables or []:
            page.table(rows, header=header)
        for key in ("note", "warning", "crossover_skipped", "comparisons_skipped", "trained_skipped"):
            if result.get(key):
                page.para(str(result[key]), muted=True)
        if tables is None:
            page.details(f"{title}: raw numbers (JSON, abridged)", json.dumps(_brief(result), indent=1)[:6000])
    page.h2("Disabled sections")
    page.table([[k, v] for k, v in report["disabled"].items()] or [["(none)", ""]], header=["section", "why"])
    return page.write(out_dir / "index.html")


def _brief(obj: Any, depth: int = 0) -> Any:
    """The section JSON without long arrays (histograms, per-prompt masses) for the page."""
    if isinstance(obj, dict):
        return {k: _brief(v, depth + 1) for k, v in obj.items() if k not in ("hist_counts", "hist_edges", "per_prompt")}
    if isinstance(obj, list) and len(obj) > 12:
        return [_brief(v, depth + 1) for v in obj[:12]] + [f"... {len(obj) - 12} more in diagnostics.json"]
    if isinstance(obj, list):
        return [_brief(v, depth + 1) for v in obj]
    return obj
