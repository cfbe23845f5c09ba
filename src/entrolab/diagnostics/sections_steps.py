"""Report sections computed per run over training steps: entropy, covariance and the law,
entropy discriminator, clipping and effective rank.

Each ``*_section(data, ...)`` returns ``(result, reason)``: a JSON-ready dict, or None and the
reason the section is disabled (which optional field is missing). Pure functions of the loaded
:class:`~entrolab.diagnostics.inputs.Dataset`; the math lives in the sibling modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from entrolab.diagnostics.clipping import clip_stats
from entrolab.diagnostics.discriminator import discriminator_stats, entropy_discriminator
from entrolab.diagnostics.entropy import answer_entropy, phase_entropy, quantile_summary
from entrolab.diagnostics.inputs import Dataset, ModelData
from entrolab.diagnostics.mechanism import fit_entropy_change, fit_entropy_performance_law, token_covariance
from entrolab.diagnostics.rank import rank_over_run
from entrolab.diagnostics.schema import Sample

Result = tuple[dict | None, str | None]


def pad(rows: Sequence[Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-sample token lists to [B, T] float64 values and a bool mask (True = valid)."""
    T = max((len(r) for r in rows), default=0)
    x = torch.zeros(len(rows), T, dtype=torch.float64)
    m = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, r in enumerate(rows):
        if r:
            x[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
            m[i, : len(r)] = True
    return x, m


def advantages(model: ModelData, samples: Sequence[Sample]) -> tuple[list[list[float]], bool]:
    """Per-token advantages of ``samples`` (each with a token list), and whether any was derived.

    A sample without ``advantage`` gets its group-centred reward r − mean(r over the same prompt's
    samples at this step), the Dr.GRPO advantage.
    """
    out, derived = [], False
    for s in samples:
        T = s.num_tokens or 0
        if isinstance(s.advantage, tuple):
            out.append(list(s.advantage))
        elif s.advantage is not None:
            out.append([s.advantage] * T)
        else:
            group = model.groups[s.prompt_id].samples
            out.append([s.reward - sum(g.reward for g in group) / len(group)] * T)
            derived = True
    return out, derived


def _runs_with(data: Dataset, need) -> dict[str, list[tuple[ModelData, list[Sample]]]]:
    runs = {}
    for run in data.runs():
        per_step = [(m, [s for s in m.samples if need(s)]) for m in data.steps(run)]
        per_step = [(m, ss) for m, ss in per_step if ss]
        if per_step:
            runs[run] = per_step
    return runs


def entropy_steps_section(data: Dataset) -> Result:
    """Per run and step: token entropy, its distribution over samples, answer entropy, phases."""
    out = {}
    for run in data.runs():
        rows = []
        for m in data.steps(run):
            groups = list(m.groups.values())
            row = {"step": m.step, "answer_entropy": _mean([answer_entropy(g.answer_counts) for g in groups])}
            weighted = [(g.token_entropy, g.token_count) for g in groups if g.token_entropy is not None]
            tokens = sum(w for _, w in weighted)
            row["token_entropy"] = sum(h * w for h, w in weighted) / tokens if tokens > 0 else None
            per_sample = [sum(s.entropies) / len(s.entropies) for s in m.samples if s.entropies]
            if per_sample:
                row["sample_entropy"] = quantile_summary(per_sample)
            phases = [phase_entropy(s.entropies, s.phase_split) for s in m.samples if s.entropies and s.phase_split is not None]
            if phases:
                row["scratchpad_entropy"] = _mean([p[0] for p in phases])
                row["answer_phase_entropy"] = _mean([p[1] for p in phases])
            rows.append(row)
        out[run] = rows
    notes = []
    if not any(s.entropies for m in data.models.values() for s in m.samples):
        notes.append("token-level entropy needs 'entropies' (rollouts) or 'token_entropy' (eval JSON)")
    if not any(s.phase_split is not None and s.entropies for m in data.models.values() for s in m.samples):
        notes.append("per-phase entropy needs 'entropies' and 'phase_split'")
    return {"runs": out, "notes": notes}, None


def mechanism_section(data: Dataset, *, bins: int = 40) -> Result:
    """Token covariance of log-prob and advantage per step; ΔH vs −Cov; the entropy–performance law."""
    runs = _runs_with(data, lambda s: s.logprobs is not None)
    if not runs:
        return None, "needs per-token 'logprobs' (and 'advantage', else group-centred rewards are used)"
    out, derived_any = {}, False
    for run, per_step in runs.items():
        rows = []
        for m, ss in per_step:
            adv, derived = advantages(m, ss)
            derived_any |= derived
            logp_BT, mask_BT = pad([s.logprobs for s in ss])
            adv_BT, _ = pad(adv)
            C = token_covariance(logp_BT, adv_BT, mask_BT)
            if C.numel() == 0:
                continue
            lo, hi = float(C.min()), float(C.max())
            counts, edges = torch.histogram(C, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
            row = {"step": m.step, "cov_mean": float(C.mean()), "cov": quantile_summary(C.tolist()),
                   "hist_counts": counts.long().tolist(), "hist_edges": edges.tolist()}
            ent = [e for s in ss if s.entropies for e in s.entropies]
            row["entropy"] = sum(ent) / len(ent) if ent else None
            row["accuracy"] = sum(s.correct for s in ss) / len(ss)
            row["reward_mean"] = sum(s.reward for s in ss) / len(ss)
            rows.append(row)
        res: dict = {"steps": rows}
        with_h = [r for r in rows if r["entropy"] is not None]
        if len(with_h) >= 3:
            res["entropy_change"] = fit_entropy_change([r["step"] for r in with_h], [r["entropy"] for r in with_h],
                                                       [r["cov_mean"] for r in with_h]).to_dict()
        out[run] = res
    note = "advantages missing for some samples: used group-centred rewards (Dr.GRPO)" if derived_any else None
    return {"runs": out, "note": note}, None


def law_section(data: Dataset, *, fit_frac: float = 0.5) -> Result:
    """Fit R = −a·exp(H) + b per run over steps (sample-level entropy, or metrics.jsonl curves)."""
    out = {}
    for run in data.runs():
        pts = []
        for m in data.steps(run):
            groups = [g for g in m.groups.values() if g.token_entropy is not None]
            tokens = sum(g.token_count for g in groups)
            if tokens > 0:
                H = sum(g.token_entropy * g.token_count for g in groups) / tokens
                n = sum(g.n for g in m.groups.values())
                pts.append((m.step, H, sum(g.c for g in m.groups.values()) / n))
        if len(pts) >= 4:
            out[run] = _law(pts, "accuracy of the run's samples", fit_frac)
    for run, rows in data.metrics.items():
        H = {r["step"]: r["policy/entropy"] for r in rows if isinstance(r.get("policy/entropy"), (int, float))}
        # The paper fits validation accuracy; the training reward is the fallback with few evals.
        for key, tag in (("eval/mean@n", "eval"), ("reward/mean", "train")):
            R = {r["step"]: r[key] for r in rows if isinstance(r.get(key), (int, float))}
            pts = [(s, H[s], R[s]) for s in sorted(set(H) & set(R))]
            if len(pts) >= 4:
                out[f"{run} (metrics.jsonl, {tag})"] = _law(pts, f"{key} vs policy/entropy", fit_frac)
                break
    if not out:
        return None, "needs token entropy and accuracy at >= 4 steps of a run (rollouts with 'entropies', or metrics.jsonl)"
    return {"runs": out}, None


def _law(pts: list[tuple[int, float, float]], what: str, fit_frac: float) -> dict:
    steps, H, R = zip(*pts)
    n_fit = max(2, min(len(pts), math.ceil(fit_frac * len(pts))))
    try:
        fit = fit_entropy_performance_law(H, R, n_fit=n_fit).to_dict()
    except ValueError as err:
        fit = {"error": str(err)}
    return {"performance": what, "steps": list(steps), "entropy": list(H), "performance_values": list(R), "fit": fit}


def discriminator_section(data: Dataset) -> Result:
    """Per-step statistics of the entropy discriminator S = p·(H + log p)."""
    runs = _runs_with(data, lambda s: s.logprobs is not None and s.entropies is not None)
    if not runs:
        return None, "needs per-token 'logprobs' and 'entropies'"
    out = {}
    for run, per_step in runs.items():
        rows = []
        for m, ss in per_step:
            logp, mask = pad([s.logprobs for s in ss])
            ent, _ = pad([s.entropies for s in ss])
            adv, _ = pad(advantages(m, ss)[0])
            rows.append({"step": m.step, **discriminator_stats(entropy_discriminator(logp, ent), adv, mask)})
        out[run] = rows
    return {"runs": out}, None


def clipping_section(data: Dataset, *, eps_low: float = 0.2, eps_high: float = 0.2, dual_clip_c: float | None = 3.0) -> Result:
    """Per-step clip fractions and clipping bias (needs the optimised policy's log-probs)."""
    runs = _runs_with(data, lambda s: s.logprobs is not None and s.policy_logprobs is not None)
    if not runs:
        return None, "needs per-token 'policy_logprobs' next to 'logprobs'"
    out = {}
    for run, per_step in runs.items():
        rows = []
        for m, ss in per_step:
            old, mask = pad([s.logprobs for s in ss])
            new, _ = pad([s.policy_logprobs for s in ss])
            adv, _ = pad(advantages(m, ss)[0])
            stats = clip_stats(new, old, adv, mask, eps_low=eps_low, eps_high=eps_high, dual_clip_c=dual_clip_c)
            rows.append({"step": m.step, **stats})
        out[run] = rows
    return {"runs": out, "eps_low": eps_low, "eps_high": eps_high, "dual_clip_c": dual_clip_c}, None


def rank_section(data: Dataset) -> Result:
    """ER / ERV / ERA over each run's steps, from the per-sample 'er'/'erv'/'era' fields."""
    out = {}
    for run in data.runs():
        steps = data.steps(run)
        res = {}
        for key in ("er", "erv", "era"):
            vals = [[getattr(s, key) for s in m.samples if getattr(s, key) is not None] for m in steps]
            rows = rank_over_run([m.step for m in steps], vals)
            if rows:
                res[key] = rows
        if res:
            out[run] = res
    if not out:
        return None, "needs per-sample 'er' / 'erv' / 'era' (compute them with diagnostics.rank from hidden states)"
    return {"runs": out}, None


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else None
