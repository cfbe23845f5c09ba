"""DNO: pairwise win-rate scores (hand values), on-policy best-vs-worst pairs (brute force), the reference of
iteration t+1 is iteration t's final policy, and resuming between iterations changes nothing."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from entrolab.preference.config import load_pref_recipe
from entrolab.preference.dno import make_judge, pairwise_scores, run_dno, sample_pairs
from entrolab.preference.pairing import best_vs_worst
from entrolab.rundir import RunDirError


TASK = {"name": "countdown", "min_numbers": 3, "max_numbers": 3, "n_train": 40, "n_validation": 4, "n_test": 4}


def lexicographic_judge(prompt: str, a: str, b: str) -> float:
    """P(a ≻ b): the lexicographically smaller text wins (deterministic, so pairs are checkable)."""
    return 0.5 if a == b else float(a < b)


def dno_recipe(tmp_path, model_dir, *extra, name="dno"):
    return load_pref_recipe({
        "task": TASK, "model": {"path": str(model_dir)}, "run_dir": str(tmp_path / name),
        "loss": {"name": "dpo", "beta": 0.1}, "optim": {"lr": 1e-2},
        "train": {"device": "cpu", "batch_size": 8, "epochs": 2},
        "dno": {"iterations": 2, "prompts_per_iteration": 4, "k": 4, "max_new_tokens": 10,
                "judge": "test_preference_dno:lexicographic_judge", "eval_each_iteration": False}}, list(extra))


def test_item3_pairwise_scores_are_mean_win_rates_with_both_orders():
    """Candidates a, b, c and a judge that favours the first position by +0.2 (the table below):
    P(a≻b) = ½[judge(a,b) + 1 − judge(b,a)] = ½[0.9 + 1 − 0.5] = 0.7 (the bias cancels), likewise
    P(b≻c) = 0.7 and P(a≻c) = ½[1.0 + 1 − 0.2] = 0.9. Mean win-rates against the other two:
    a = (0.7 + 0.9)/2 = 0.8, b = (0.3 + 0.7)/2 = 0.5, c = (0.1 + 0.3)/2 = 0.2."""
    table = {("a", "b"): 0.9, ("b", "a"): 0.5, ("b", "c"): 0.9, ("c", "b"): 0.5, ("a", "c"): 1.0, ("c", "a"): 0.2}
    scores = pairwise_scores("x", ["a", "b", "c"], lambda p, y1, y2: table[(y1, y2)])
    assert scores == pytest.approx([0.8, 0.5, 0.2])
    with pytest.raises(ValueError, match="outside"):
        pairwise_scores("x", ["a", "b"], lambda p, y1, y2: 2.0)


def test_item3_sample_pairs_keep_best_vs_worst(tiny_model_dir):
    """Brute force: re-sample with the same generator seed, score every sample with the judge, and pick
    best vs worst per prompt; ``sample_pairs`` returns exactly those pairs (prompts with a tie are dropped)."""
    from entrolab.components import build_one
    from entrolab.models.loading import load_policy
    from entrolab.registry import TASKS
    from entrolab.rollout.sampler import sample

    model, tok = load_policy(str(tiny_model_dir), device="cpu")
    task = build_one(TASKS, TASK, "task")
    prompts = task.prompts("train")[:5]
    judge = make_judge("test_preference_dno:lexicographic_judge")
    pairs, m = sample_pairs(model, tok, task, prompts, k=4, temperature=1.0, max_new_tokens=10, margin=0.0,
                            judge=judge, generator=torch.Generator().manual_seed(3))
    batch = sample(model, tok, prompts, group_size=4, max_new_tokens=10, generator=torch.Generator().manual_seed(3))
    want = []
    for p, prompt in enumerate(prompts):
        texts = batch.texts[4 * p:4 * p + 4]
        scores = [sum(lexicographic_judge("", t, u) for u in texts if u is not t) / 3 for t in texts]
        pick = best_vs_worst(scores, margin=0.0)
        if pick and texts[pick[0]] != texts[pick[1]]:
            want.append((prompt.text, texts[pick[0]], texts[pick[1]]))
            assert texts[pick[0]] == min(texts) and texts[pick[1]] == max(texts)
    assert [(x.prompt, x.chosen, x.rejected) for x in pairs] == want and want
    assert m["dno/pairs_kept"] == len(want) / 5 and m["dno/sample_accuracy"] == 0.0  # a random model never solves


def test_item3_rewards_judge_scores_with_reward_components(tiny_model_dir):
    """``judge: rewards`` scores each sample with the weighted reward terms: with the length penalty
    −1·max(0, L − 0) = −L (L = sampled tokens), brute force on the same samples: each prompt's chosen response
    is its shortest sample and the rejected its longest, with scores −L."""
    from entrolab.components import build_one
    from entrolab.models.loading import load_policy
    from entrolab.registry import TASKS
    from entrolab.rollout.sampler import sample

    model, tok = load_policy(str(tiny_model_dir), device="cpu")
    task = build_one(TASKS, TASK, "task")
    prompts = task.prompts("train")[:6]
    judge = make_judge("rewards", reward_terms=[{"name": "length", "target": 0, "coef": 1.0, "label": "len"}])
    pairs, _ = sample_pairs(model, tok, task, prompts, k=4, temperature=1.0, max_new_tokens=10, margin=0.0,
                            judge=judge, generator=torch.Generator().manual_seed(1))
    batch = sample(model, tok, prompts, group_size=4, max_new_tokens=10, generator=torch.Generator().manual_seed(1))
    want = []
    for p in range(len(prompts)):
        texts, lens = batch.texts[4 * p:4 * p + 4], batch.mask_BT[4 * p:4 * p + 4].sum(-1).tolist()
        pick = best_vs_worst([-float(n) for n in lens], margin=0.0)
        if pick and texts[pick[0]] != texts[pick[1]]:
            want.append((texts[pick[0]], texts[pick[1]], -lens[pick[0]], -lens[pick[1]]))
            assert lens[pick[0]] == min(lens) and lens[pick[1]] == max(lens)
    assert [(x.chosen, x.rejected, x.chosen_score, x.rejected_score) for x in pairs] == want and want


def test_item3_reference_is_the_previous_iterate(tmp_path, tiny_model_dir):
    """Iteration 1 starts from iteration 0's final checkpoint and uses it as the reference: at its first step
    (one step covers all its pairs) the loss is log 2 (h = 0 for every pair, so reference = policy) and the
    logged mean chosen log-prob is the previous iterate's, not the starting model's (a stale reference
    π_0 would give h ≠ 0 there)."""
    from entrolab.models.loading import load_policy
    from entrolab.preference.data import load_preferences
    from entrolab.preference.logps import encode_pairs, sequence_logps

    states = run_dno(dno_recipe(tmp_path, tiny_model_dir), progress=False)
    run = tmp_path / "dno"
    prev = states[0]["model"]
    assert Path(prev) == run / "iter_000" / "train" / "checkpoints" / "step_000002"
    sub = load_pref_recipe(run / "iter_001" / "train" / "recipe.yaml")
    assert sub.model.path == prev and sub.dno is None
    first = json.loads((run / "iter_001" / "train" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["pref/loss"] == pytest.approx(math.log(2), abs=1e-6) == states[1]["first_step_loss"]
    pairs = load_preferences(run / "iter_001" / "pairs.jsonl")
    assert len(pairs) <= 8  # one step = all pairs of the iteration
    means = {}
    for name, path in (("prev", prev), ("start", tiny_model_dir)):
        model, tok = load_policy(str(path), device="cpu")
        with torch.no_grad():
            means[name] = float(sequence_logps(model, encode_pairs(tok, pairs), pad_id=tok.pad_token_id)[0].mean())
    assert first["pref/logp_chosen"] == pytest.approx(means["prev"], abs=1e-4)
    assert abs(means["prev"] - means["start"]) > 1e-2
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_item3_resume_between_iterations_gives_the_same_result(tmp_path, tiny_model_dir):
    straight = run_dno(dno_recipe(tmp_path, tiny_model_dir, name="straight"), progress=False)
    run_dno(dno_recipe(tmp_path, tiny_model_dir, "dno.iterations=1", name="split"), progress=False)
    resumed = run_dno(dno_recipe(tmp_path, tiny_model_dir, name="split"), resume=True, progress=False)
    for a, b in zip(straight, resumed):
        wa, wb = load_file(Path(a["model"]) / "model.safetensors"), load_file(Path(b["model"]) / "model.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert {k: v for k, v in a.items() if k != "model"} == {k: v for k, v in b.items() if k != "model"}
    assert (tmp_path / "straight" / "iter_001" / "pairs.jsonl").read_text() == \
        (tmp_path / "split" / "iter_001" / "pairs.jsonl").read_text()


def test_item3_resume_inside_an_iteration_continues_its_training(tmp_path, tiny_model_dir):
    """A kill during iteration 0's training (simulated: its state file, its newest checkpoint and the run's
    metrics line removed) resumes from the iteration's older checkpoint, reusing its sampled pairs, and
    ends with the same weights as the uninterrupted run."""
    r = dno_recipe(tmp_path, tiny_model_dir, "dno.iterations=1", "train.save_every=1")
    (state,) = run_dno(r, progress=False)
    want = load_file(Path(state["model"]) / "model.safetensors")
    it = tmp_path / "dno" / "iter_000"
    pairs = (it / "pairs.jsonl").read_text()
    (it / "state.json").unlink()
    shutil.rmtree(state["model"])
    (tmp_path / "dno" / "metrics.jsonl").write_text("")
    run_id = json.loads((it / "train" / "checkpoints" / "step_000001" / "manifest.json").read_text())["run_id"]
    (again,) = run_dno(r, resume=True, progress=False)
    # resumed, not restarted: a fresh start (--overwrite) would clear the checkpoints and take a new run id
    assert json.loads((Path(again["model"]) / "manifest.json").read_text())["run_id"] == run_id
    got = load_file(Path(again["model"]) / "model.safetensors")
    assert again["model"] == state["model"] and all(torch.equal(want[k], got[k]) for k in want)
    assert (it / "pairs.jsonl").read_text() == pairs
    assert again == state


def test_item3_dno_run_dir_rules(tmp_path, tiny_model_dir):
    r = dno_recipe(tmp_path, tiny_model_dir, "dno.iterations=1")
    run_dno(r, progress=False)
    with pytest.raises(RunDirError, match="already holds a DNO run"):
        run_dno(r, progress=False)
    with pytest.raises(RunDirError, match="dno.k"):
        run_dno(dno_recipe(tmp_path, tiny_model_dir, "dno.iterations=1", "dno.k=3"), resume=True, progress=False)
    with pytest.raises(ValueError, match="need 44 prompts"):
        run_dno(dno_recipe(tmp_path, tiny_model_dir, "dno.iterations=11"), overwrite=True, progress=False)
