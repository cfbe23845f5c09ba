"""End to end: ``diagnose`` on small rollout files and eval JSONs (JSON numbers, HTML, disabled sections)."""

import json
import math
import random

import pytest

from entrolab.diagnostics.diagnose import choose_base, clean, compute, diagnose
from entrolab.diagnostics.inputs import load_dataset
from entrolab.diagnostics.schema import RolloutFormatError


def make_samples(run, steps, *, seed, full=True, delta=None, n=8, prompts=4):
    """Deterministic fake rollouts; answers drawn from a per-run answer distribution."""
    rng = random.Random(seed)
    out = []
    for step in steps:
        for pid in range(prompts):
            for _ in range(n):
                correct = rng.random() < 0.3 + 0.1 * step
                answer = rng.choice(["s1", "s2", "s3"]) if correct else rng.choice(["w", None])
                T = rng.randint(3, 6)
                rec = {"prompt_id": pid, "run": run, "step": step, "completion": "x", "reward": float(correct),
                       "correct": correct, "answer": answer, "difficulty": "easy" if pid % 2 else "hard",
                       "solutions": ["s1", "s2", "s3", "s4"]}
                if full:
                    lp = [math.log(rng.uniform(0.1, 1.0)) for _ in range(T)]
                    rec.update(logprobs=lp, entropies=[rng.uniform(0.1, 2.0) / (1 + step) for _ in range(T)],
                               phase_split=T // 2, policy_logprobs=[x + rng.gauss(0, 0.3) for x in lp],
                               rewards={"rm_a": rng.random(), "rm_b": rng.random(), "rm_c": float(correct)},
                               er=rng.uniform(2, 5), ref_logprobs=[x - 0.1 for x in lp])
                if delta is not None:
                    rec["reward_delta"] = delta
                out.append(rec)
    return out


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def report_of(paths, *, base=None, **kw):
    """The report dict without writing files or plots (what diagnostics.json holds)."""
    data = load_dataset(paths)
    return json.loads(json.dumps(clean(compute(data, base=choose_base(data, base), n_boot=50, **kw))))


def run_diagnose(tmp_path, paths, name="out", **kw):
    html = diagnose(paths, tmp_path / name, n_boot=50, **kw)
    report = json.loads((tmp_path / name / "diagnostics.json").read_text())
    return html, report


def test_full_report_has_every_section_and_plots(tmp_path):
    path = write(tmp_path / "r.jsonl", make_samples("base", [0], seed=0) + make_samples("grpo", [0, 1, 2, 3, 4], seed=1))
    html, report = run_diagnose(tmp_path, [path])
    assert report["inputs"]["base"] == "base"
    assert set(report["disabled"]) == {"cliff"}
    s = report["sections"]
    assert set(s["passk"]["curves"]) == {"base", "grpo"} and "grpo" in s["passk"]["crossover"]
    assert set(s["support"]["comparisons"]["grpo"]["by_difficulty"]) == {"easy", "hard"}
    assert 0.0 <= s["support"]["models"]["base"]["coverage_mean"] <= 1.0
    assert len(s["law"]["runs"]["grpo"]["steps"]) == 5
    assert s["entropy_steps"]["runs"]["grpo"][0]["scratchpad_entropy"] is not None
    assert s["starc"]["distances"]["reward vs correct"] == pytest.approx(0.0, abs=1e-12)
    assert s["starc"]["distances"]["reward vs rm_c"] == pytest.approx(0.0, abs=1e-12)
    assert s["bon"]["trained"]["grpo"]["sequence_kl_mean"] > 0
    text = html.read_text()
    assert text.count("<img") >= 8 and "Disabled sections" in text
    assert "<td>pass@1</td>" in text and "STARC distance" in text and "ceiling b − a" in text
    assert "NaN" not in (tmp_path / "out" / "diagnostics.json").read_text()


def test_report_is_reproducible_given_the_seed(tmp_path):
    path = write(tmp_path / "r.jsonl", make_samples("base", [0], seed=0, full=False) + make_samples("rl", [3], seed=1, full=False))
    _, a = run_diagnose(tmp_path, [path], "a", seed=3)
    b = report_of([path], seed=3)
    c = report_of([path], seed=4)
    assert a == b
    assert a["sections"]["passk"]["curves"] != c["sections"]["passk"]["curves"]


def test_missing_optional_fields_disable_only_their_sections(tmp_path):
    path = write(tmp_path / "r.jsonl", make_samples("base", [0], seed=0, full=False) + make_samples("rl", [3], seed=1, full=False))
    report = report_of([path])
    disabled = report["disabled"]
    assert "logprobs" in disabled["mechanism"] and "entropies" in disabled["discriminator"]
    assert "policy_logprobs" in disabled["clipping"] and "'er'" in disabled["rank"]
    assert "rewards" in disabled["preference"]
    for kept in ("passk", "support", "answer_entropy", "bon", "starc"):
        assert kept in report["sections"]
    assert any("entropies" in n for n in report["sections"]["entropy_steps"]["notes"])


def test_single_run_skips_comparisons_and_says_so(tmp_path):
    path = write(tmp_path / "r.jsonl", make_samples("only", [0, 1], seed=0))
    html, report = run_diagnose(tmp_path, [path])
    assert report["inputs"]["base"] is None
    assert "single model" in report["sections"]["passk"]["crossover_skipped"]
    assert "single model" in report["sections"]["support"]["comparisons_skipped"]
    assert "no base model" in report["disabled"]["bon"]
    assert "comparisons skipped" in html.read_text()


def eval_json(label, correct):
    prompts = [{"id": f"p{i}", "text": "t", "n": 4, "correct": c,
                "answers": {"a": c, "w": 4 - c} if c < 4 else {"a": 4},
                "correct_answers": {"a": c} if c else {}, "solutions": ["a", "b"], "token_entropy": 0.5,
                "len_mean": 5.0, "greedy": None} for i, c in enumerate(correct)]
    return {"label": label, "model": "m", "task": {}, "split": "test", "n_samples": 4, "temperature": 1.0,
            "ks": [1, 2, 4], "summary": {}, "prompts": prompts}


def test_eval_jsons_from_a_run_directory(tmp_path):
    run = tmp_path / "run1"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "base.json").write_text(json.dumps(eval_json("base", [0, 1, 2, 4])))
    (run / "eval" / "final.json").write_text(json.dumps(eval_json("final", [0, 4, 4, 4])))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "policy/entropy": 1.0 / (1 + s), "reward/mean": 0.1 * s}) + "\n"
                                               for s in range(6)))
    report = report_of([run])
    s = report["sections"]
    assert s["passk"]["curves"]["base"]["pass_at_k"][0] == pytest.approx(7 / 16)
    assert s["support"]["comparisons"]["run1"]["problem_level"] == {
        "preserved": 3, "expanded": 0, "shrunk": 0, "out_of_support": 1, "srr": 1.0, "ndr": 0.0, "sds": 0.0, "nscr": 0.0}
    # Answer-level KL(final ‖ base): p1 log(1/(1/4)) = log 4, p2 log 2, p0 and p3 0 -> mean ¾ log 2.
    assert s["bon"]["trained"]["run1"]["answer_kl_mean"] == pytest.approx(0.75 * math.log(2))
    assert s["bon"]["trained"]["run1"]["answer_kl_infinite_prompts"] == 0
    law = s["law"]["runs"]["run1 (metrics.jsonl, train)"]
    assert law["steps"] == [0, 1, 2, 3, 4, 5] and law["fit"]["n_fit"] == 3
    assert "eval JSONs carry no per-sample rewards" in report["disabled"]["starc"]


def test_policy_cliff_from_two_perturbed_runs(tmp_path):
    recs = make_samples("r0", [5], seed=2, full=False, delta=0.0) + make_samples("r1", [5], seed=3, full=False, delta=0.05)
    report = report_of([write(tmp_path / "r.jsonl", recs)], base="r0")
    cliff = report["sections"]["cliff"]["runs"]["r1"]
    assert cliff["delta"] == 0.05 and cliff["tv_per_delta"] == pytest.approx(cliff["tv_mean"] / 0.05)


def test_malformed_line_fails_with_its_number(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(make_samples("base", [0], seed=0, n=1, prompts=1)[0]) + "\n{\"prompt_id\": 1,\n")
    with pytest.raises(RolloutFormatError, match=r"r\.jsonl:2:"):
        diagnose([path], tmp_path / "out")
    with pytest.raises(ValueError, match="base model 'nope' is not among"):
        diagnose([write(tmp_path / "ok.jsonl", make_samples("a", [0], seed=0, full=False))], tmp_path / "o", base="nope")


def test_policy_cliff_from_eval_jsons(tmp_path):
    """p0: reference answers {a: 4}, perturbed {b: 4} (both correct) -> TV 1; p1 identical -> TV 0.

    Mean TV ½, per unit δ = 0.1: 5. Near-optimal sets under the reference's correctness rewards:
    p0 {a} (size 1), p1 {a: 1, w: 0} (size 1) -> mean 1. Noise floor: both prompts pool to (½, ½)
    with 4 samples a side; k1 − k2 + 4 ~ Bin(8, ½), so E TV = E|X − 4|/4 = (280/256)/4 = 0.2734
    (bootstrap estimate, 400 draws).
    """
    def ev(label, delta, p0):
        return {"label": label, "reward_delta": delta, "prompts": [
            {"id": "p0", "n": 4, "correct": 4, "answers": {p0: 4}, "correct_answers": {p0: 4}},
            {"id": "p1", "n": 4, "correct": 2, "answers": {"a": 2, "w": 2}, "correct_answers": {"a": 2}}]}
    (tmp_path / "ref.json").write_text(json.dumps(ev("ref", 0.0, "a")))
    (tmp_path / "pert.json").write_text(json.dumps(ev("pert", 0.1, "b")))
    cliff = report_of([tmp_path / "ref.json", tmp_path / "pert.json"])["sections"]["cliff"]
    assert cliff["reference"] == "ref"
    floor = pytest.approx(280 / 256 / 4, abs=0.03)
    assert cliff["runs"]["pert"] == {"delta": 0.1, "num_prompts": 2, "tv_mean": 0.5, "tv_max": 1.0,
                                     "tv_per_delta": pytest.approx(5.0), "near_optimal_size_mean": 1.0,
                                     "tv_floor_mean": floor, "tv_above_floor": pytest.approx(0.5 - 280 / 1024, abs=0.03)}


def test_every_section_with_data_has_a_plot(tmp_path):
    """Base + a 5-step run trained with δ = 0 + a run trained with δ = 0.05 enable all 13 sections;
    each one then draws at least one PNG, and the page embeds one image per PNG."""
    from entrolab.diagnostics.diagnose import SECTIONS, _figures

    recs = (make_samples("base", [0], seed=0) + make_samples("grpo", [0, 1, 2, 3, 4], seed=1, delta=0.0)
            + make_samples("pert", [4], seed=2, delta=0.05))
    html, report = run_diagnose(tmp_path, [write(tmp_path / "r.jsonl", recs)])
    assert report["disabled"] == {} and set(report["sections"]) == set(SECTIONS)
    n_png = 0
    for name, result in report["sections"].items():
        pngs = _figures(name, result, tmp_path / "figs" / name)
        assert pngs and all(p.stat().st_size > 0 for p in pngs), name
        n_png += len(pngs)
    assert html.read_text().count("<img") == n_png


def test_cli_diagnose_writes_report_and_names_bad_line(tmp_path, capsys):
    """`entrolab diagnose <rollouts> --out DIR --seed S` writes the report; a malformed line exits 1
    with `<file>:<line>:` on stderr (no traceback)."""
    from entrolab.cli import main

    recs = make_samples("base", [0], seed=0, full=False) + make_samples("rl", [2], seed=1, full=False)
    path = write(tmp_path / "r.jsonl", recs)
    assert main(["diagnose", str(path), "--out", str(tmp_path / "out"), "--seed", "1", "--base", "base"]) == 0
    report = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert report["inputs"]["seed"] == 1 and report["inputs"]["base"] == "base"
    assert "diagnostics:" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text().splitlines()[0] + "\n{\"prompt_id\": 1,\n")
    assert main(["diagnose", str(bad), "--out", str(tmp_path / "o2")]) == 1
    assert "bad.jsonl:2:" in capsys.readouterr().err


def eval_n(label, correct, n=16):
    """Eval JSON with n samples per prompt 'test-i'; prompt i has correct[i] correct answers 'a'."""
    prompts = [{"id": f"test-{i}", "n": n, "correct": c, "answers": {"a": c, "w": n - c} if c < n else {"a": n},
                "correct_answers": {"a": c} if c else {}, "solutions": ["a", "b"]} for i, c in enumerate(correct)]
    return {"label": label, "n_samples": n, "ks": [1, 2, 4, 8, 16], "summary": {}, "prompts": prompts}


def run_dir(root, name, *, final, step5=None, seed=0):
    """A trained run as the trainer leaves it: recipe name, metrics for steps 1..10, evals (16 samples
    per test prompt) and training rollouts (8 samples per training prompt at steps 5 and 10)."""
    run = root / f"dir_{name}"
    (run / "eval").mkdir(parents=True)
    (run / "recipe.yaml").write_text(f"name: {name}\nseed: {seed}\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "reward/mean": 0.1 * s}) + "\n" for s in range(1, 11)))
    (run / "eval" / "base.json").write_text(json.dumps(eval_n("base", [0, 2, 8, 16])))
    (run / "eval" / "final.json").write_text(json.dumps(eval_n("final", final)))
    if step5 is not None:
        (run / "eval" / "step_000005.json").write_text(json.dumps(eval_n("step_000005", step5)))
    write(run / "rollouts.jsonl", make_samples(name, [5, 10], seed=seed, full=False, n=8, prompts=4))
    return run


def test_item16_training_rollouts_keep_the_eval_passk_grid_and_runs_are_named(tmp_path):
    """Two runs (grpo, clip_cov), each with the same base eval, a final eval (n = 16) and training
    rollouts (n = 8, other prompts). Base pass@1 = (0 + 2/16 + 8/16 + 16/16)/4 = 0.40625, pass@16 =
    (0 + 1 + 1 + 1)/4 = 0.75; grpo final counts (4, 8, 12, 16): pass@1 = 40/64 = 0.625, pass@16 = 1."""
    a = run_dir(tmp_path, "grpo", final=[4, 8, 12, 16], step5=[2, 4, 8, 16])
    b = run_dir(tmp_path, "clip_cov", final=[0, 4, 16, 16], seed=1)
    html, report = run_diagnose(tmp_path, [a, b])
    models = {(m["run"], m["step"]) for m in report["inputs"]["models"]}
    assert models == {("base", 0), ("grpo", 5), ("grpo", 10), ("clip_cov", 10),
                      ("grpo (training rollouts)", 5), ("grpo (training rollouts)", 10),
                      ("clip_cov (training rollouts)", 5), ("clip_cov (training rollouts)", 10)}
    assert any("dir_clip_cov/eval/base.json" in n and "merged" in n for n in report["inputs"]["notes"])
    curves = report["sections"]["passk"]["curves"]
    assert curves["base"]["ks"] == curves["grpo"]["ks"] == curves["clip_cov"]["ks"] == [1, 2, 4, 8, 16]
    assert curves["grpo (training rollouts)"]["ks"] == [1, 2, 4, 8]
    assert curves["base"]["pass_at_k"][0] == pytest.approx(0.40625) and curves["base"]["pass_at_k"][-1] == 0.75
    assert curves["grpo"]["pass_at_k"][0] == pytest.approx(0.625) and curves["grpo"]["pass_at_k"][-1] == 1.0
    assert set(report["sections"]["passk"]["crossover"]) == {"grpo", "clip_cov"}
    assert "(training rollouts)" in report["sections"]["passk"]["note"]
    assert set(report["sections"]["support"]["comparisons"]) >= {"grpo", "clip_cov"}
    text = html.read_text()
    assert "<td>pass@16</td>" in text and "clip_cov/final" not in text and "<td>final</td>" not in text


def test_item16_each_model_keeps_its_own_passk_grid(tmp_path):
    """Loose inputs: base and final evals with 16 samples per prompt and an 8-sample rollout file:
    the evals' curves still reach k = 16; the rollouts' curve stops at its own n = 8."""
    (tmp_path / "base.json").write_text(json.dumps(eval_n("base", [0, 2, 8, 16])))
    (tmp_path / "final.json").write_text(json.dumps(eval_n("final", [4, 8, 12, 16])))
    rollouts = write(tmp_path / "r.jsonl", make_samples("grpo", [10], seed=0, full=False, n=8, prompts=4))
    curves = report_of([tmp_path / "base.json", tmp_path / "final.json", rollouts])["sections"]["passk"]["curves"]
    assert curves["base"]["ks"] == curves["final"]["ks"] == [1, 2, 4, 8, 16]
    assert curves["grpo"]["ks"] == [1, 2, 4, 8]
    # pass@k = mean over prompts of 1 − C(16 − c, k)/C(16, k), c = 4, 8, 12, 16.
    assert curves["final"]["pass_at_k"] == pytest.approx([0.625, 0.7916666667, 0.9222527473, 0.9903651904, 1.0])


def test_item15_diagnose_raw_json_is_collapsed(tmp_path):
    """Sections without a table view show their JSON inside a closed <details>, never as an open <pre>."""
    path = write(tmp_path / "r.jsonl", make_samples("base", [0], seed=0) + make_samples("grpo", [0, 1, 2], seed=1))
    text = diagnose([path], tmp_path / "out", n_boot=20).read_text()
    pres = text.count("<pre>")
    assert pres >= 1 and text.count("</summary><pre>") == pres and "<details open" not in text
