"""Key-number tables of the diagnostics page: ``section_tables(name, result)`` → [(header, rows)].

Sections without a table here are shown as an abridged JSON block; every number is always in
``diagnostics.json``.
"""

from __future__ import annotations

from typing import Any

Table = tuple[list[str], list[list[Any]]]
_SUPPORT_KEYS = ["preserved", "expanded", "shrunk", "out_of_support", "srr", "ndr", "sds", "nscr"]


def _passk(r: dict) -> list[Table]:
    curves = r["curves"]
    models = list(curves)
    # Each model has its own grid (up to its own n); a budget a model lacks is an empty cell.
    ks = sorted({k for c in curves.values() for k in c["ks"]})
    idx = {m: {k: i for i, k in enumerate(curves[m]["ks"])} for m in models}
    rows = [[f"pass@{k}", *(f"{curves[m]['pass_at_k'][i]:.3f} [{curves[m]['lo'][i]:.3f}, {curves[m]['hi'][i]:.3f}]"
                            if (i := idx[m].get(k)) is not None else None for m in models)] for k in ks]
    out = [(["k", *models], rows)]
    if r.get("crossover"):
        out.append((["trained vs base", "status", "crossover k", "interpolated k"],
                    [[m, c["status"], c["k"], c["k_interp"]] for m, c in r["crossover"].items()]))
    return out


def _support(r: dict) -> list[Table]:
    out = [(["model", "budget k", "epsilon", "coverage (mean)", "mass on solutions (mean)"],
            [[m, e["budget"], e["epsilon"], e.get("coverage_mean"), e.get("mass_on_solutions_mean")]
             for m, e in r["models"].items()])]
    rows = []
    for m, c in (r.get("comparisons") or {}).items():
        for level in ("answer_level", "problem_level"):
            if level in c:
                rows.append([m, level.replace("_", " "), *(c[level][k] for k in _SUPPORT_KEYS)])
        for diff, d in c.get("by_difficulty", {}).items():
            rows.append([m, f"answers, difficulty {diff}", *(d[k] for k in _SUPPORT_KEYS)])
    if rows:
        out.append((["model", "level", *_SUPPORT_KEYS], rows))
    return out


def _answer_entropy(r: dict) -> list[Table]:
    keys = ["answer_entropy", "answer_entropy_parsed", "correct_answer_entropy", "token_entropy",
            "distinct_correct_mean", "zero_correct_prompts", "num_prompts"]
    return [(["model", *keys], [[m, *(v[k] for k in keys)] for m, v in r["models"].items()])]


def _law(r: dict) -> list[Table]:
    rows = [[run, f.get("a"), f.get("b"), f.get("ceiling"), f.get("n_fit"), f.get("rmse_fit"), f.get("rmse_holdout"),
             f.get("error")] for run, res in r["runs"].items() for f in [res["fit"]]]
    return [(["run", "a", "b", "ceiling b − a", "fitted steps", "RMSE fit", "RMSE held out", "error"], rows)]


def _mechanism(r: dict) -> list[Table]:
    rows = [[run, c["eta_hat"], c["correlation"], c["sign_agreement"]]
            for run, res in r["runs"].items() if (c := res.get("entropy_change"))]
    return [(["run", "η̂ (ΔH ≈ −η̂·Cov)", "corr(ΔH, −Cov)", "sign agreement"], rows)] if rows else []


def _bon(r: dict) -> list[Table]:
    keys = ["N", "kl_bound", "kl_exact_mean", "bon_reward", "bon_reward_unbiased", "tilted_reward_at_exact_kl", "tilted_ess_mean"]
    out = [(keys, [[row[k] for k in keys] for row in r["curve"]])]
    tk = ["reward_mean", "answer_kl_mean", "answer_kl_infinite_prompts", "sequence_kl_mean", "num_prompts"]
    if r.get("trained"):
        out.append((["trained model", *tk], [[m, *(t[k] for k in tk)] for m, t in r["trained"].items()]))
    return out


def _cliff(r: dict) -> list[Table]:
    keys = ["delta", "tv_mean", "tv_floor_mean", "tv_above_floor", "tv_max", "tv_per_delta", "near_optimal_size_mean",
            "num_prompts"]
    return [(["perturbed run", *keys], [[m, *(v.get(k) for k in keys)] for m, v in r["runs"].items()])]


def _starc(r: dict) -> list[Table]:
    return [(["reward functions", "STARC distance"], [[k, v] for k, v in r["distances"].items()])]


def _preference(r: dict) -> list[Table]:
    keys = ["cycle_rate", "cycles", "decisive_triangles", "disagreement_entropy_bits_mean", "uncertain_frac_mean", "num_groups"]
    return [(keys, [[r[k] for k in keys]])]


_BUILDERS = {"passk": _passk, "support": _support, "answer_entropy": _answer_entropy, "law": _law,
             "mechanism": _mechanism, "bon": _bon, "cliff": _cliff, "starc": _starc, "preference": _preference}


def section_tables(name: str, result: dict) -> list[Table] | None:
    """Tables for section ``name``, or None when it has no table view (the page shows JSON)."""
    build = _BUILDERS.get(name)
    return None if build is None else build(result)
