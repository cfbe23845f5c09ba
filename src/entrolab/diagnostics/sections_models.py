"""Report sections that compare models (each run's last snapshot): pass@k, support, answer-level
entropy, best-of-N vs KL, policy cliff.

Each ``*_section`` returns ``(result, reason)`` like :mod:`sections_steps`. ``base`` is the base
model's run label; comparisons are base vs every other model, and are skipped (with the reason)
when only one model was loaded.
"""

from __future__ import annotations

import math
import torch

from entrolab.diagnostics.bon import bon_distribution, bon_expected_reward, bon_kl_bound, kl_divergence, tilted_at_kl
from entrolab.diagnostics.cliff import answer_rewards, policy_cliff
from entrolab.diagnostics.curves import crossover_k, passk_curves
from entrolab.diagnostics.entropy import answer_entropy
from entrolab.diagnostics.inputs import NONE_ANSWER, Dataset, ModelData, PromptGroup
from entrolab.diagnostics.passk import default_ks
from entrolab.diagnostics.support import empirical_support_epsilon, solution_coverage, support_change

Result = tuple[dict | None, str | None]
SINGLE = "a single model was loaded: comparisons need a base and at least one other model"


def finals(data: Dataset) -> dict[str, ModelData]:
    """Each run's last snapshot, by run label (the models that comparisons use)."""
    return {run: data.final(run) for run in data.runs()}


def _common(models: list[ModelData]) -> list[str]:
    ids = set(models[0].groups)
    for m in models[1:]:
        ids &= set(m.groups)
    return sorted(ids)


def passk_section(data: Dataset, base: str | None, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Result:
    """pass@k curves with bootstrap bands for every model, and the crossover k of base vs others.

    Each model's k grid runs up to its own smallest n (a run's 8-sample training rollouts never cut
    the 64-sample evals' curves down to k = 8). Models sharing prompts with the base model (or, with
    no base, with the first model) are scored on the prompts all of them share; a model sharing none
    (training rollouts on training prompts) is scored on its own prompts and left out of crossovers.
    Each model is bootstrapped with the same ``seed``.
    """
    models = finals(data)
    anchor = models[base] if base is not None else next(iter(models.values()))
    cohort = [label for label, m in models.items() if set(m.groups) & set(anchor.groups)]
    common = _common([models[label] for label in cohort])
    apart = [label for label in models if label not in cohort]
    note = (f"{', '.join(apart)}: no prompt in common with {anchor.run}; each such curve is over its own prompts"
            if apart else None)
    curves = {}
    for label, m in models.items():
        ids = common if label in cohort else sorted(m.groups)
        counts = ([m.groups[p].n for p in ids], [m.groups[p].c for p in ids])
        curves[label] = passk_curves({label: counts}, n_boot=n_boot, alpha=alpha, seed=seed)[label]
    out = {"curves": curves, "num_prompts": len(common), "alpha": alpha, "n_boot": n_boot, "seed": seed, "note": note}
    if base is None or len(models) < 2:
        out["crossover"] = None
        out["crossover_skipped"] = SINGLE if len(models) < 2 else "no base model"
    else:
        b = curves[base]
        out["crossover"] = {}
        for label in cohort:
            if label == base:
                continue
            bk, ck = dict(zip(b["ks"], b["pass_at_k"])), dict(zip(curves[label]["ks"], curves[label]["pass_at_k"]))
            ks = sorted(set(bk) & set(ck))  # the budgets both grids hold (1, 2, 4, … up to the smaller n)
            out["crossover"][label] = crossover_k(ks, [bk[k] for k in ks], [ck[k] for k in ks])
    return out, None


def _support_sets(m: ModelData, ids: list[str]) -> dict[str, set[str]]:
    return {p: {a for a, c in m.groups[p].correct_counts.items() if c > 0} for p in ids}


def support_section(data: Dataset, base: str | None, *, zeta: float = 0.05) -> Result:
    """Invisible-Leash support change of every model against the base, overall and per difficulty;
    coverage of enumerable solution sets."""
    models = finals(data)
    out: dict = {"zeta": zeta, "models": {}}
    for label, m in models.items():
        budget = min(g.n for g in m.groups.values())
        entry = {"budget": budget, "epsilon": empirical_support_epsilon(budget, zeta=zeta)}
        cov = [(g, solution_coverage(g.correct_counts, g.n, g.solutions)) for g in m.groups.values() if g.solutions]
        if cov:
            entry["coverage_mean"] = sum(c["coverage"] for _, c in cov) / len(cov)
            entry["mass_on_solutions_mean"] = sum(c["mass_on_solutions"] for _, c in cov) / len(cov)
            entry["per_prompt"] = {g.prompt_id: {"coverage": c["coverage"], "mass": c["mass"], "unlisted": c["unlisted"]}
                                   for g, c in cov}
        out["models"][label] = entry
    if base is None or len(models) < 2:
        out["comparisons"] = None
        out["comparisons_skipped"] = SINGLE if len(models) < 2 else "no base model"
        return out, None
    comps = {}
    for label, m in models.items():
        if label == base:
            continue
        ids = _common([models[base], m])
        if not ids:
            comps[label] = {"error": "shares no prompt with the base model"}
            continue
        b_sets, t_sets = _support_sets(models[base], ids), _support_sets(m, ids)
        res = {"num_prompts": len(ids),
               "answer_level": support_change(b_sets, t_sets, level="answer").to_dict(),
               "problem_level": support_change(b_sets, t_sets, level="problem").to_dict(), "by_difficulty": {}}
        budgets = {min(models[base].groups[p].n for p in ids), min(m.groups[p].n for p in ids)}
        if len(budgets) > 1:
            res["warning"] = "base and trained sampling budgets differ: support counts favour the larger budget"
        for diff in sorted({models[base].groups[p].difficulty or "all" for p in ids}):
            sel = [p for p in ids if (models[base].groups[p].difficulty or "all") == diff]
            res["by_difficulty"][diff] = support_change({p: b_sets[p] for p in sel}, {p: t_sets[p] for p in sel}).to_dict()
        comps[label] = res
    out["comparisons"] = comps
    return out, None


def answer_entropy_section(data: Dataset) -> Result:
    """Per model: answer-level entropy (all answers / parsed only / correct only), token entropy,
    distinct correct answers."""
    out = {}
    for label, m in finals(data).items():
        gs = list(m.groups.values())
        weighted = [(g.token_entropy, g.token_count) for g in gs if g.token_entropy is not None]
        tokens = sum(w for _, w in weighted)
        correct = [answer_entropy(g.correct_counts) for g in gs if g.c > 0]
        out[label] = {
            "answer_entropy": _mean([answer_entropy(g.answer_counts) for g in gs]),
            "answer_entropy_parsed": _mean([answer_entropy(g.answer_counts, unparsed="drop") for g in gs]),
            "correct_answer_entropy": _mean(correct),
            "token_entropy": sum(h * w for h, w in weighted) / tokens if tokens > 0 else None,
            "distinct_correct_mean": _mean([len(g.correct_counts) for g in gs]),
            "zero_correct_prompts": sum(1 for g in gs if g.c == 0),
            "num_prompts": len(gs),
        }
    return {"models": out}, None


def _rewards_of(g: PromptGroup) -> list[float]:
    """Per-sample rewards; eval JSONs (counts only) use correctness as a 0/1 reward."""
    return [s.reward for s in g.samples] if g.samples else [1.0] * g.c + [0.0] * (g.n - g.c)


def _answer_kl(q: PromptGroup, p: PromptGroup) -> float:
    """Plug-in KL(q ‖ p) between two models' empirical answer distributions on one prompt (inf when q
    gives an answer p never sampled). By data processing it lower-bounds the sequence-level KL."""
    total = 0.0
    for a, c in q.answer_counts.items():
        if c <= 0:
            continue
        if p.answer_counts.get(a, 0) <= 0:
            return math.inf
        total += c / q.n * math.log((c / q.n) / (p.answer_counts[a] / p.n))
    return total


def bon_section(data: Dataset, base: str | None) -> Result:
    """Best-of-N vs the KL-optimal tilt, from the base model's samples, next to the RL models."""
    models = finals(data)
    if base is None:
        return None, "no base model (the reference distribution) could be chosen"
    ref = models[base]
    n_min = min(g.n for g in ref.groups.values())
    rows = []
    for N in default_ks(n_min):
        exact, bon_r, unbiased, tilt_r, ess = [], [], [], [], []
        for g in ref.groups.values():
            # Plug-in: the base's empirical sample distribution is the reference p (uniform over its
            # samples), so BoN's KL and reward and the tilt's are exact under one distribution and
            # directly comparable (with 0/1 rewards the two coincide: BoN is then itself a tilt).
            rewards = _rewards_of(g)
            r = torch.tensor(rewards, dtype=torch.float64)
            p = torch.full_like(r, 1.0 / r.numel())
            q = bon_distribution(p, r, N)
            kl = kl_divergence(q, p)
            exact.append(kl)
            bon_r.append(float((q * r).sum()))
            unbiased.append(bon_expected_reward(rewards, N))
            t = tilted_at_kl(rewards, kl)
            tilt_r.append(t["reward"])
            ess.append(t["ess"])
        rows.append({"N": N, "kl_bound": bon_kl_bound(N), "kl_exact_mean": _mean(exact), "bon_reward": _mean(bon_r),
                     "bon_reward_unbiased": _mean(unbiased), "tilted_reward_at_exact_kl": _mean(tilt_r),
                     "tilted_ess_mean": _mean(ess)})
    out: dict = {"reference": base, "curve": rows, "trained": {}}
    if len(models) < 2:
        out["trained_skipped"] = SINGLE
    for label, m in models.items():
        if label == base:
            continue
        ids = _common([ref, m])
        kls = [_answer_kl(m.groups[pid], ref.groups[pid]) for pid in ids]
        inf = sum(1 for k in kls if math.isinf(k))
        seq = [sum(s.logprobs) - sum(s.ref_logprobs) for s in m.samples if s.logprobs and s.ref_logprobs]
        out["trained"][label] = {
            "reward_mean": _mean([sum(_rewards_of(m.groups[p])) / m.groups[p].n for p in ids]),
            "answer_kl_mean": _mean([k for k in kls if not math.isinf(k)]), "answer_kl_infinite_prompts": inf,
            "sequence_kl_mean": _mean(seq), "num_prompts": len(ids),
        }
    return out, None


def cliff_section(data: Dataset, *, tol: float = 1e-6) -> Result:
    """TV per unit δ between the δ = 0 run and each run trained with rewards perturbed by δ."""
    deltas: dict[str, float] = {}
    for label, m in finals(data).items():
        vals = {s.reward_delta for s in m.samples if s.reward_delta is not None}
        if m.reward_delta is not None:
            vals.add(m.reward_delta)
        if len(vals) > 1:
            return None, f"run '{label}' has several 'reward_delta' values {sorted(vals)}"
        if vals:
            deltas[label] = vals.pop()
    refs = [r for r, d in deltas.items() if d == 0]
    perturbed = {r: d for r, d in deltas.items() if d != 0}
    if not refs or not perturbed:
        return None, "needs a run with 'reward_delta' = 0 and a run with 'reward_delta' = δ != 0 (same seed)"
    models = finals(data)
    ref = models[refs[0]]
    # Answer-level unperturbed rewards; eval JSONs (no samples) use correctness.
    rewards = {p: answer_rewards([(s.answer or NONE_ANSWER, s.reward) for s in g.samples]
                                 or [(a, float(a in g.correct_counts)) for a in g.answer_counts])
               for p, g in ref.groups.items()}
    out = {"reference": refs[0], "runs": {}}
    for label, d in perturbed.items():
        ref_counts = {p: g.answer_counts for p, g in ref.groups.items()}
        per_counts = {p: g.answer_counts for p, g in models[label].groups.items()}
        out["runs"][label] = {"delta": d, **policy_cliff(ref_counts, per_counts, delta=abs(d), rewards=rewards, tol=tol)}
    return out, None


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None
