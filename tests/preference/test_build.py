"""Issue 12, engineer B items 3–4: sample_and_score, judges, pairs_from_scored and `entrolab prefs build`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from entrolab.cli import main
from entrolab.preference.build import (
    Judge,
    ScoredPrompt,
    make_judge,
    pairs_from_scored,
    resolve_task,
    sample_and_score,
)
from entrolab.preference.data import load_preferences
from entrolab.preference.pairing import heron_compare
from entrolab.registry import TASKS
from entrolab.rewards.compose import RewardError
from entrolab.rollout.sampler import sample

TASK = {"name": "countdown", "n_train": 12, "n_validation": 2, "n_test": 2, "max_numbers": 3}
TASK_YAML = "{name: countdown, n_train: 12, n_validation: 2, n_test: 2, max_numbers: 3}"


@pytest.fixture(scope="module")
def tiny_folder(tiny_lm, tmp_path_factory):
    """The conftest tiny char-level LM saved as a model folder (what `prefs build --model` takes)."""
    model, tok = tiny_lm
    out = tmp_path_factory.mktemp("tiny_policy")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def task():
    import entrolab.tasks  # noqa: F401  (registers the tasks)

    return TASKS.build("countdown", {k: v for k, v in TASK.items() if k != "name"})


def _length(batch, task):
    """A judge term: the completion's character count (hand-checkable)."""
    return torch.tensor([float(len(t)) for t in batch.texts]), {}


def test_item3_sample_and_score_is_the_sampler_plus_the_judge(tiny_folder, tiny_lm, task):
    """Texts equal one sampler call with Generator(seed) over the same prompts; scores equal the judge."""
    model, tok = tiny_lm
    got = sample_and_score(tiny_folder, task, split="train", num_prompts=3, k=4, seed=5, temperature=1.0,
                           max_new_tokens=6, scorer=_length, prompt_offset=2, device="cpu", dtype="float32")
    prompts = task.prompts("train")[2:5]
    ref = sample(model, tok, prompts, group_size=4, temperature=1.0, max_new_tokens=6,
                 generator=torch.Generator().manual_seed(5), batch_size=512)
    assert [sp.prompt for sp in got] == prompts
    assert [c for sp in got for c, _ in sp.samples] == ref.texts
    assert [s for sp in got for _, s in sp.samples] == [float(len(t)) for t in ref.texts]
    again = sample_and_score(tiny_folder, task, split="train", num_prompts=3, k=4, seed=5, max_new_tokens=6,
                             scorer=_length, prompt_offset=2, device="cpu", dtype="float32")
    assert again == got
    other = sample_and_score(tiny_folder, task, split="train", num_prompts=3, k=4, seed=6, max_new_tokens=6,
                             scorer=_length, prompt_offset=2, device="cpu", dtype="float32")
    assert other != got


def test_item3_sample_and_score_in_several_sampler_calls_keeps_prompt_order(tiny_folder, tiny_lm, task):
    """batch_size 4, k 2: two prompts per sampler call, so 3 prompts take 2 calls sharing one generator;
    the rows are concatenated back in prompt order and scored together."""
    model, tok = tiny_lm
    got = sample_and_score(tiny_folder, task, num_prompts=3, k=2, seed=9, max_new_tokens=6, scorer=_length,
                           batch_size=4, device="cpu", dtype="float32")
    prompts, gen = task.prompts("train")[:3], torch.Generator().manual_seed(9)
    texts = []
    for part in (prompts[:2], prompts[2:]):
        texts += sample(model, tok, part, group_size=2, max_new_tokens=6, generator=gen, batch_size=4).texts
    assert [sp.prompt for sp in got] == prompts
    assert [c for sp in got for c, _ in sp.samples] == texts
    assert [s for sp in got for _, s in sp.samples] == [float(len(t)) for t in texts]


def test_item3_a_crashing_scorer_names_the_sample(tiny_folder, tiny_lm, task):
    model, tok = tiny_lm
    ref = sample(model, tok, task.prompts("train")[:2], group_size=3, max_new_tokens=6,
                 generator=torch.Generator().manual_seed(0))
    bad = ref.texts[4]  # prompt 1's second sample

    def picky(batch, task):
        if bad in batch.texts:
            raise KeyError("boom")
        return torch.zeros(batch.batch_size), {}

    with pytest.raises(RewardError, match=r"raised KeyError: 'boom' — on sample 4 \(prompt id 'train-00001', "
                                          r"completion '" + __import__("re").escape(bad)):
        sample_and_score(tiny_folder, task, num_prompts=2, k=3, seed=0, max_new_tokens=6, scorer=picky,
                         device="cpu", dtype="float32")

    def nan(batch, task):
        return torch.full((batch.batch_size,), float("nan")), {}

    with pytest.raises(RewardError, match=r"gave nan for sample 0 \(prompt id 'train-00000'"):
        sample_and_score(tiny_folder, task, num_prompts=2, k=3, seed=0, max_new_tokens=6, scorer=nan,
                         device="cpu", dtype="float32")


def _scored(task):
    """Prompt 0 of the task with hand-made completions: correct ones use a real solution."""
    p = task.prompts("train")[0]
    sol = task.solutions(p)[0]
    good, bad, junk = f"#{sol}", "#1+1", "no marker"
    # verifier score 1/0; order: bad, good, bad (copy), junk, good (copy)
    return p, good, bad, junk, [ScoredPrompt(p, [(bad, 0.0), (good, 1.0), (bad, 0.0), (junk, 0.0), (good, 1.0)])]


def test_item3_verifier_rule_pairs_distinct_correct_with_incorrect(task):
    """Distinct texts: bad(0) good(1) junk(3); correct only good → one pair good ≻ bad (first incorrect)."""
    p, good, bad, junk, scored = _scored(task)
    pairs = pairs_from_scored(scored, task, rule="verifier", meta={"seed": 7})
    assert len(pairs) == 1
    x = pairs[0]
    assert (x.prompt, x.chosen, x.rejected, x.label) == (p.text, good, bad, 1.0)
    assert (x.chosen_score, x.rejected_score) == (1.0, 0.0)
    assert x.meta == {"prompt_id": p.id, "chosen_index": 1, "rejected_index": 0, "chosen_correct": True,
                      "rejected_correct": False, "seed": 7}


def test_item3_margin_and_best_vs_worst_rules_and_soft_labels(task):
    p, good, bad, junk, _ = _scored(task)
    scored = [ScoredPrompt(p, [(bad, 0.5), (good, 2.0), (junk, -1.0), ("#2+2", 1.0)])]
    # desc: good(2) #2+2(1) bad(.5) junk(-1); asc: junk bad #2+2 good → (good, junk) gap 3, (#2+2, bad) gap .5
    got = [(x.chosen, x.rejected) for x in pairs_from_scored(scored, task, rule="margin")]
    assert got == [(good, junk), ("#2+2", bad)]
    wide = pairs_from_scored(scored, task, rule="margin", margin=0.5)
    assert [(x.chosen, x.rejected) for x in wide] == [(good, junk)]
    assert [(x.chosen, x.rejected) for x in pairs_from_scored(scored, task, rule="best_vs_worst")] == [(good, junk)]
    soft = pairs_from_scored(scored, task, rule="margin", soft_label=True)
    assert [x.label for x in soft] == pytest.approx([1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(-0.5))])
    with pytest.raises(ValueError, match="rule 'heron' needs one score per factor"):
        pairs_from_scored(scored, task, rule="heron", heron_margins=[0.0])
    with pytest.raises(ValueError, match="unknown rule 'best'"):
        pairs_from_scored(scored, task, rule="best")


def test_item3_heron_rule_records_factors_and_level(task):
    p, good, bad, junk, _ = _scored(task)
    # factors (verifier, format, -length): good (1,1,-l), bad (0,1,-4), junk (0,0,-9)
    scored = [ScoredPrompt(p, [(bad, (0.0, 1.0, -4.0)), (junk, (0.0, 0.0, -9.0)), (good, (1.0, 1.0, -6.0))])]
    pairs = pairs_from_scored(scored, task, rule="heron", heron_margins=[0.0, 0.0, 0.0])
    # level 0: good≻bad, good≻junk (gap 1; by index (0,2) first → good≻bad); bad≻junk reuses bad → junk left
    assert [(x.chosen, x.rejected, x.meta["heron_level"]) for x in pairs] == [(good, bad, 0)]
    assert pairs[0].meta["chosen_factors"] == [1.0, 1.0, -6.0] and pairs[0].chosen_score is None
    with pytest.raises(ValueError, match="rule 'margin' cannot use one score per factor"):
        pairs_from_scored(scored, task, rule="margin")


def test_item3_judges_score_with_the_registered_reward_terms(tiny_rm, tiny_folder, tiny_lm, task):
    """reward:reward_model equals RewardModel.score_texts on prompt + completion; a mean ensemble of
    two copies of it (no member normalisation) equals it too; heron stacks one column per factor."""
    from entrolab.rewards.reward_model import RewardModel

    folder, _, _ = tiny_rm
    kw = dict(num_prompts=2, k=3, seed=1, max_new_tokens=5, device="cpu", dtype="float32")
    judge = make_judge("reward:reward_model", params={"path": str(folder)})
    rm = sample_and_score(tiny_folder, task, scorer=judge, **kw)
    texts = [sp.prompt.text + c for sp in rm for c, _ in sp.samples]
    ref = RewardModel(path=str(folder)).score_texts(texts).tolist()
    assert [s for sp in rm for _, s in sp.samples] == pytest.approx(ref, abs=1e-6)
    member = {"name": "reward_model", "path": str(folder)}
    ens = make_judge("ensemble", params={"member_norm": "none"},
                     members=[member, f"{{name: reward_model, path: {folder}}}"])
    got = sample_and_score(tiny_folder, task, scorer=ens, **kw)
    assert [s for sp in got for _, s in sp.samples] == pytest.approx(ref, abs=1e-6)
    heron = make_judge("heron", factors=["verifier", "format", "{name: length, target: 0, coef: 1.0}"])
    hs = sample_and_score(tiny_folder, task, scorer=heron, **kw)
    from entrolab.rewards.basic import format_ok

    model, tok = tiny_lm
    lengths = sample(model, tok, task.prompts("train")[:2], group_size=3, max_new_tokens=5,
                     generator=torch.Generator().manual_seed(1)).lengths_B.tolist()
    factors = [(c, s) for sp in hs for c, s in sp.samples]
    for (c, s), n_tokens, sp in zip(factors, lengths, [sp for sp in hs for _ in sp.samples]):
        # (verifier reward, format reward, −completion tokens incl. EOS)
        assert s == (task.verify(sp.prompt, c).reward, 1.0 if format_ok(c, "#") else 0.0, -float(n_tokens))


def test_item3_make_judge_refuses_what_the_builder_cannot_run():
    with pytest.raises(ValueError, match="unknown judge 'rm'"):
        make_judge("rm")
    with pytest.raises(ValueError, match=r"reward term 'likelihood' needs \['bind_policy', 'set_scorer'\]"):
        make_judge("reward:likelihood")
    with pytest.raises(ValueError, match="judge 'ensemble' needs at least one member"):
        make_judge("ensemble")
    with pytest.raises(ValueError, match="members are for the 'ensemble' judge"):
        make_judge("verifier", members=["verifier"])
    with pytest.raises(ValueError, match="heron factor 0: expected a reward name"):
        make_judge("heron", factors=[{"path": "x"}])
    assert isinstance(make_judge("heron", factors=["verifier", "format"]), Judge)


def test_item4_demo_base_countdown_means_the_demo_task():
    from entrolab.demo import DEMO_RECIPE

    t, block = resolve_task("countdown", demo_base=True)
    assert block == DEMO_RECIPE["task"]
    assert (t.max_numbers, t.sizes["train"]) == (DEMO_RECIPE["task"]["max_numbers"], DEMO_RECIPE["task"]["n_train"])
    assert resolve_task("countdown", demo_base=False)[0].max_numbers == 4  # the registry default
    t, block = resolve_task(TASK_YAML, demo_base=True)
    assert t.sizes["train"] == 12 and block == TASK


def _cli(folder, out, *extra):
    return main(["prefs", "build", "--model", str(folder), "--task", TASK_YAML, "--k", "4", "--num-prompts", "6",
                 "--max-new-tokens", "6", "--device", "cpu", "--out", str(out), "--quiet", *extra])


def test_item4_cli_builds_deterministic_pairs_with_provenance(tiny_folder, tmp_path, capsys):
    """Length judge (−characters), margin rule: every pair's chosen is strictly shorter; same seed, same bytes."""
    args = ["--judge", "reward:length", "--param", "target=0", "--param", "coef=1.0", "--rule", "margin",
            "--seed", "3"]
    assert _cli(tiny_folder, tmp_path / "a.jsonl", *args) == 0
    assert "pairs: " in capsys.readouterr().out
    pairs = load_preferences(tmp_path / "a.jsonl")
    assert pairs and all(x.chosen_score > x.rejected_score for x in pairs)
    assert all(x.meta["seed"] == 3 and x.meta["rule"] == "margin" and x.meta["prompt_id"].startswith("train-")
               for x in pairs)
    summary = json.loads((tmp_path / "a.jsonl.build.json").read_text())
    assert (summary["prompts"], summary["samples"], summary["pairs"]) == (6, 24, len(pairs))
    assert summary["task"] == TASK and summary["params"] == {"target": 0, "coef": 1.0}
    assert _cli(tiny_folder, tmp_path / "o.jsonl", *args, "--prompt-offset", "4", "--num-prompts", "2") == 0
    assert {x.meta["prompt_id"] for x in load_preferences(tmp_path / "o.jsonl")} <= {"train-00004", "train-00005"}
    assert _cli(tiny_folder, tmp_path / "b.jsonl", *args) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    # --flip-frac: round(0.5 · n) pairs reversed, recorded in meta; Parquet output by suffix
    assert _cli(tiny_folder, tmp_path / "f.parquet", *args, "--flip-frac", "0.5") == 0
    flipped = load_preferences(tmp_path / "f.parquet")
    assert sum(x.meta["flipped"] for x in flipped) == math.floor(0.5 * len(pairs) + 0.5)
    assert all((x.chosen_score < x.rejected_score) == x.meta["flipped"] for x in flipped)


def test_item4_cli_heron_and_errors(tiny_folder, tmp_path, capsys):
    assert _cli(tiny_folder, tmp_path / "h.jsonl", "--judge", "heron", "--rule", "heron", "--factor", "verifier",
                "--factor", "format", "--factor", "{name: length, target: 0, coef: 1.0}",
                "--heron-margins", "0", "0", "0.5") == 0
    pairs = load_preferences(tmp_path / "h.jsonl")
    assert pairs
    for x in pairs:  # the random tiny model is never correct: format or length decides
        w, l = x.meta["chosen_factors"], x.meta["rejected_factors"]
        assert heron_compare(w, l, margins=[0, 0, 0.5]) == (1, x.meta["heron_level"])
        assert x.meta["heron_level"] in (1, 2) and w[0] == l[0] == 0.0
    capsys.readouterr()
    # a random model solves nothing: the verifier rule has nothing to pair, and says so
    assert _cli(tiny_folder, tmp_path / "v.jsonl") == 1
    assert "rule 'verifier' made no pairs from 6 prompts x 4 samples" in capsys.readouterr().err
    assert _cli(tiny_folder, tmp_path / "x.jsonl", "--rule", "heron") == 1
    assert "rule 'heron' and judge 'heron' go together" in capsys.readouterr().err
    assert main(["prefs", "build", "--model", str(tmp_path), "--out", str(tmp_path / "y.jsonl")]) == 1
    assert "neither 'demo-base' nor a model folder" in capsys.readouterr().err
    assert _cli(tiny_folder, tmp_path / "z.jsonl", "--flip-frac", "2") == 1
    assert "--flip-frac must be a number in [0, 1], got 2.0" in capsys.readouterr().err


def test_item4_cli_ensemble_judge_scores_are_the_reward_models(tiny_folder, tiny_rm, tmp_path):
    """WCO (min) of two copies of one reward model without member normalisation is that model's score,
    so every pair's recorded scores equal RewardModel.score_texts(prompt + response)."""
    from entrolab.rewards.reward_model import RewardModel

    folder, _, _ = tiny_rm
    member = f"{{name: reward_model, path: {folder}}}"
    assert _cli(tiny_folder, tmp_path / "e.jsonl", "--judge", "ensemble", "--member", member, "--member", member,
                "--param", "mode=wco", "--param", "member_norm=none", "--rule", "best_vs_worst") == 0
    pairs = load_preferences(tmp_path / "e.jsonl")
    rm = RewardModel(path=str(folder))
    ref = rm.score_texts([t for x in pairs for t in (x.prompt + x.chosen, x.prompt + x.rejected)]).tolist()
    assert [s for x in pairs for s in (x.chosen_score, x.rejected_score)] == pytest.approx(ref, abs=1e-5)
    assert len(pairs) == len({x.meta["prompt_id"] for x in pairs})  # best_vs_worst: one pair per prompt
