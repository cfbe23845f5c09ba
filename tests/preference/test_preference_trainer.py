"""The offline preference trainer: summed log-probs, the DPO identity at step 1, reference modes, grad
accumulation, exact resume (with a stateful loss and an extra head), NaN stop, recipes and the CLI.

The policy is a 1-layer char-level Llama on the Countdown charset; pairs are verifier pairs built by
``verifier_pairs`` (a correct demonstration against the same completion with a wrong answer).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from entrolab import checkpoint as ckpt
from entrolab.preference.api import PairLogps
from entrolab.preference.config import build_loss, load_pref_recipe
from entrolab.preference.data import PreferencePair, write_preferences
from entrolab.preference.losses import dpo_loss
from entrolab.preference.logps import sequence_logps
from entrolab.preference.trainer import PreferenceTrainer
from entrolab.registry import ConfigError
from entrolab.rundir import RunDirError
from entrolab.trainer import TrainingStopped

TASK = {"name": "countdown", "min_numbers": 3, "max_numbers": 3, "n_train": 40, "n_validation": 4, "n_test": 4}

ROOT = Path(__file__).parents[2]


def verifier_pairs(n: int, *, seed: int = 0) -> list[PreferencePair]:
    """n pairs (chosen verified correct, rejected verified wrong) from the train split of ``TASK``."""
    from entrolab.components import build_one, import_builtins
    from entrolab.registry import TASKS

    import_builtins()
    task = build_one(TASKS, TASK, "task")
    rng, out = random.Random(seed), []
    for prompt in task.prompts("train")[:n]:
        good = task.demonstration(prompt, rng)
        bad = good + "+0"  # the same expression plus a number the prompt does not give
        assert task.verify(prompt, good).correct and not task.verify(prompt, bad).correct
        out.append(PreferencePair(prompt.text, good, bad, meta={"prompt_id": prompt.id}))
    return out


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    return write_preferences(verifier_pairs(6), tmp_path_factory.mktemp("pairs") / "pairs.jsonl")


def recipe(tmp_path, model_dir, data, *extra, name="run"):
    return load_pref_recipe({"task": TASK, "model": {"path": str(model_dir)}, "data": {"path": str(data)},
                             "train": {"device": "cpu", "batch_size": 2, "epochs": 2},
                             "optim": {"lr": 1e-2}, "run_dir": str(tmp_path / name)}, list(extra))


def weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------------------------------------------- math
def test_sequence_logps_is_the_sum_over_response_tokens(tiny_model_dir):
    """Brute force: each pair alone (no padding), log-softmax of the full sequence, summed over the response
    positions (chosen + EOS), equals the batched, padded ``sequence_logps`` of pairs of different lengths."""
    from entrolab.models.loading import load_policy
    from entrolab.preference.logps import encode_pairs

    model, tok = load_policy(str(tiny_model_dir), device="cpu")
    pairs = verifier_pairs(3)
    pairs[1] = PreferencePair(pairs[1].prompt, pairs[1].chosen[:4], pairs[1].rejected)  # another length
    enc = encode_pairs(tok, pairs)
    w_B, l_B = sequence_logps(model, enc, pad_id=tok.pad_token_id)
    for b, (p, c, r) in enumerate(enc):
        for resp, got in ((c, w_B[b]), (r, l_B[b])):
            ids = torch.tensor([p + resp])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            want = sum(float(logp[len(p) - 1 + t, tok_id]) for t, tok_id in enumerate(resp))
            assert got.item() == pytest.approx(want, abs=1e-4)
    assert enc[0][1][-1] == tok.eos_token_id  # responses end with EOS, as sampled completions that stopped


def test_data_flip_frac_swaps_that_share_of_pairs_with_the_recipe_seed(tmp_path, tiny_model_dir, pairs_file):
    """data.flip_frac = 0.5 of 6 pairs: exactly 3 reversed, the same 3 as flip_labels(seed) picks."""
    from entrolab.preference.data import flip_labels, load_preferences

    tr = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, "data.flip_frac=0.5", "seed=3"), progress=False)
    given = load_preferences(pairs_file)
    flipped = [i for i, (a, b) in enumerate(zip(given, tr.pairs)) if a.chosen != b.chosen]
    assert len(flipped) == 3
    assert all(tr.pairs[i].chosen == given[i].rejected and tr.pairs[i].rejected == given[i].chosen for i in flipped)
    assert [p.chosen for p in tr.pairs] == [p.chosen for p in flip_labels(given, frac=0.5, seed=3)]


@pytest.mark.parametrize("reference", ["precomputed", "on_the_fly"])
def test_item1_first_step_is_dpo_at_policy_equal_reference(tmp_path, tiny_model_dir, pairs_file, reference):
    """π_ref = the starting model, so at step 1 h_w = h_l = 0: every pair's DPO loss is log 2 exactly, the
    implicit margin 0, accuracy 0 (no pair has r_w > r_l); the logged log-probs are the sums under π_0."""
    tr = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, f"reference={reference}", "train.steps=1"),
                           progress=False)
    first = tr.train_step()
    assert first["pref/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["pref/margin"] == pytest.approx(0.0, abs=1e-6) and first["pref/accuracy"] == 0.0
    assert first["pref/logp_chosen"] < 0 and first["optim/grad_norm"] > 0


def test_item1_on_the_fly_reference_equals_precomputed(tmp_path, tiny_model_dir, pairs_file):
    runs = {}
    for ref in ("precomputed", "on_the_fly"):
        tr = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, f"reference={ref}", name=ref),
                               progress=False)
        tr.train()
        runs[ref] = (weights(tr), metrics(tr.run_dir))
    for k, v in runs["precomputed"][0].items():
        torch.testing.assert_close(v, runs["on_the_fly"][0][k], atol=1e-5, rtol=1e-4)
    assert [m["pref/margin"] for m in runs["precomputed"][1]] == pytest.approx(
        [m["pref/margin"] for m in runs["on_the_fly"][1]], abs=1e-4)
    assert runs["precomputed"][1][-1]["pref/margin"] > 0  # the policy moved towards the chosen answers


def test_item1_grad_accumulation_equals_one_big_batch(tmp_path, tiny_model_dir, pairs_file):
    """batch_size 2 × grad_accum 2 and batch_size 4 × 1 take the same steps (the mean over 4 pairs)."""
    a = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, "train.batch_size=2", "train.grad_accum=2",
                                 name="a"), progress=False)
    b = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, "train.batch_size=4", name="b"), progress=False)
    assert a.step_indices(0) == b.step_indices(0) and a.total_steps == b.total_steps == 4  # ceil(6/4) × 2 epochs
    a.train(), b.train()
    for k, v in weights(a).items():
        torch.testing.assert_close(v, weights(b)[k], atol=1e-5, rtol=1e-4)


def test_item1_step_indices_visit_every_pair_once_per_epoch(tmp_path, tiny_model_dir, pairs_file):
    tr = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, "train.batch_size=4"), progress=False)
    assert tr.steps_per_epoch == 2  # 6 pairs, 4 per step: the last step of an epoch takes the 2 left
    for epoch in (0, 1):
        steps = [tr.step_indices(2 * epoch + j) for j in (0, 1)]
        assert [len(s) for s in steps] == [4, 2] and sorted(steps[0] + steps[1]) == list(range(6))
    assert tr.step_indices(0) != tr.step_indices(2)  # a fresh permutation per epoch



@pytest.mark.parametrize("reference", ["precomputed", "on_the_fly"])
def test_item1_lora_reference_is_the_base_and_resume_is_exact(tmp_path, tiny_model_dir, pairs_file, reference):
    """Under LoRA no second model is loaded: π_ref is the policy with adapters disabled (the base weights), so
    step 1 is log 2 exactly (B = 0: policy = base); after training the adapters moved and the reference did
    not (the last step's margin > 0); 3 steps == 1 step + resume (adapters loaded from the checkpoint)."""
    pytest.importorskip("peft")
    lora = ["model.lora={r: 4, alpha: 8}", f"reference={reference}"]
    straight = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, *lora, "train.steps=3", name="a"),
                                 progress=False)
    assert straight.ref_model is None
    straight.train()
    m = metrics(straight.run_dir)
    assert m[0]["pref/loss"] == pytest.approx(math.log(2), abs=1e-6) and m[-1]["pref/margin"] > 0
    PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, *lora, "train.steps=1", name="b"),
                      progress=False).train()
    resumed = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, *lora, "train.steps=3", name="b"),
                                resume=True, progress=False)
    resumed.train()
    for k, v in weights(straight).items():
        assert torch.equal(v, weights(resumed)[k]), k

# ---------------------------------------------------------------------------------------------------- state
class DynamicLabelDPO:
    """A stateful loss with an extra trained parameter made in ``bind_policy``, to test that the trainer
    binds it first and that checkpoints carry both.

    Labels move toward σ(z) after each use (POWER-DL's rule, l ← 0.8 l + 0.2 σ(z)); ``extra_loss`` pulls the
    scalar ``w`` toward 1 ((w − 1)², trained by the same optimizer)."""

    requires_reference = True

    def __init__(self, *, beta: float = 0.1):
        self.beta, self.labels = beta, {}

    def bind_policy(self, model, tokenizer):  # the trainer calls it before extra_parameters / load_state_dict
        self.w = torch.nn.Parameter(torch.zeros((), dtype=next(model.parameters()).dtype))

    def __call__(self, lp: PairLogps):
        h_w, h_l = lp.log_ratios()
        lab = torch.tensor([self.labels.get(int(i), 1.0) for i in lp.index_B])
        z = (self.beta * (h_w - h_l)).detach()
        for i, s in zip(lp.index_B.tolist(), torch.sigmoid(z).tolist()):
            self.labels[i] = 0.8 * self.labels.get(i, 1.0) + 0.2 * s
        return dpo_loss(h_w, h_l, lab, beta=self.beta), {"test/w": float(self.w.detach())}

    def extra_loss(self, *, model, tokenizer, pairs, device):
        return (self.w - 1.0) ** 2, {}

    def extra_parameters(self):
        return [self.w]

    def state_dict(self):
        return {"labels": dict(self.labels), "w": self.w.detach().clone()}

    def load_state_dict(self, state):
        self.labels = dict(state["labels"])
        with torch.no_grad():
            self.w.copy_(state["w"])


class NanAfterTwo(DynamicLabelDPO):
    calls = 0

    def __call__(self, lp):
        NanAfterTwo.calls += 1
        loss_B, m = super().__call__(lp)
        return (loss_B * float("nan") if NanAfterTwo.calls > 2 else loss_B), m


def test_item1_resume_is_bit_identical(tmp_path, tiny_model_dir, pairs_file):
    """5 steps straight == 2 steps, checkpoint, resume for 3 more: the same weights bit for bit, the same
    loss state (dynamic labels, the extra parameter and its optimizer state) and the same metric lines,
    across an epoch boundary (3 steps per epoch) with shuffling."""
    loss = ["loss.name=test_preference_trainer:DynamicLabelDPO", "train.steps=5"]
    straight = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, *loss, name="straight"), progress=False)
    straight.train()
    first = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, *loss[:1], "train.steps=2", name="split"),
                              progress=False)
    first.train()
    resumed = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, *loss, name="split"), resume=True,
                                progress=False)
    assert resumed.step == 2
    resumed.train()
    for k, v in weights(straight).items():
        assert torch.equal(v, weights(resumed)[k]), k
    assert straight.loss.labels == resumed.loss.labels and torch.equal(straight.loss.w, resumed.loss.w)
    assert 0 < float(straight.loss.w.detach()) < 1  # the extra parameter was trained
    def untimed(run_dir):
        return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in metrics(run_dir)]

    assert untimed(straight.run_dir) == untimed(resumed.run_dir)


def test_item1_resume_refuses_changed_data(tmp_path, tiny_model_dir):
    data = write_preferences(verifier_pairs(4), tmp_path / "pairs.jsonl")
    PreferenceTrainer(recipe(tmp_path, tiny_model_dir, data, "train.steps=1"), progress=False).train()
    write_preferences(verifier_pairs(4, seed=1)[::-1], data)
    with pytest.raises(RunDirError, match="changed since the run started"):
        PreferenceTrainer(recipe(tmp_path, tiny_model_dir, data, "train.steps=2"), resume=True, progress=False)


def test_item1_nan_stops_with_last_good_checkpoint(tmp_path, tiny_model_dir, pairs_file):
    NanAfterTwo.calls = 0
    tr = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, "train.save_every=1",
                                  "loss.name=test_preference_trainer:NanAfterTwo"), progress=False)
    with pytest.raises(TrainingStopped, match="step_000002"):
        tr.train()
    assert [s for s, _ in ckpt.list_checkpoints(tr.ckpt_root)] == [1, 2]
    assert ckpt.verify_checkpoint(tr.ckpt_root / "step_000002") is None


def test_item1_reference_free_loss_skips_the_reference(tmp_path, tiny_model_dir, pairs_file):
    class_path = "loss.name=test_preference_trainer:RefFree"
    tr = PreferenceTrainer(recipe(tmp_path, tiny_model_dir, pairs_file, class_path, "reference=none",
                                  "train.steps=1"), progress=False)
    assert tr.ref_model is None and tr.ref_N is None
    tr.train()  # RefFree asserts it got no reference log-probs
    with pytest.raises(ConfigError, match="needs a reference policy"):
        build_loss(recipe(tmp_path, tiny_model_dir, pairs_file, "reference=none"))


class RefFree:
    requires_reference = False

    def __call__(self, lp: PairLogps):
        assert lp.ref_chosen_B is None and lp.ref_rejected_B is None
        return -torch.nn.functional.logsigmoid(0.1 * (lp.chosen_B - lp.rejected_B)), {}


def test_item1_fresh_run_refuses_used_dir_and_overwrite_clears(tmp_path, tiny_model_dir, pairs_file):
    r = recipe(tmp_path, tiny_model_dir, pairs_file, "train.steps=1")
    PreferenceTrainer(r, progress=False).train()
    with pytest.raises(RunDirError, match="already holds a run"):
        PreferenceTrainer(r, progress=False)
    PreferenceTrainer(r, overwrite=True, progress=False)
    assert metrics(r.resolved_run_dir()) == [] and not (r.resolved_run_dir() / "checkpoints").exists()


def lexicographic_judge(prompt: str, a: str, b: str) -> float:
    return 0.5 if a == b else float(a < b)


def test_item2_data_build_samples_pairs_once_and_resume_rereads_them(tmp_path, tiny_model_dir):
    """``data.build`` samples K completions per prompt from the starting model and keeps best vs worst by the
    judge (here: the lexicographically smallest text wins), writes them to ``pairs.jsonl`` and a resume trains
    on that file, not on a new sample. With the verifier a random model solves nothing: a clear error."""
    build = {"split": "train", "num_prompts": 4, "k": 3, "max_new_tokens": 8}
    r = load_pref_recipe({"task": TASK, "model": {"path": str(tiny_model_dir)}, "run_dir": str(tmp_path / "b"),
                          "data": {"build": {**build, "judge": "test_preference_trainer:lexicographic_judge"}},
                          "train": {"device": "cpu", "batch_size": 2, "steps": 1}})
    tr = PreferenceTrainer(r, progress=False)
    tr.train()
    written = (tmp_path / "b" / "pairs.jsonl").read_text()
    assert tr.pairs and all(p.chosen < p.rejected and p.chosen_score > p.rejected_score for p in tr.pairs)
    again = PreferenceTrainer(load_pref_recipe(r.model_dump(mode="json"), ["train.steps=2"]), resume=True,
                              progress=False)
    assert again.pairs == tr.pairs and (tmp_path / "b" / "pairs.jsonl").read_text() == written
    with pytest.raises(ValueError, match=r"no pair from 4 prompts × 3 samples had a score gap above 0.0 \(verifier\)"):
        PreferenceTrainer(load_pref_recipe(r.model_dump(mode="json"), ["data.build.judge=verifier",
                                                                       f"run_dir={tmp_path / 'v'}"]), progress=False)


# ---------------------------------------------------------------------------------------------------- recipes
def test_pref_recipe_schema_is_strict(tmp_path, tiny_model_dir, pairs_file):
    with pytest.raises(ConfigError, match="Did you mean 'grad_accum'"):
        recipe(tmp_path, tiny_model_dir, pairs_file, "train.grad_acum=2")
    with pytest.raises(ConfigError, match="exactly one of data.path"):
        load_pref_recipe({"data": {"path": "a.jsonl", "build": {"k": 4}}})
    with pytest.raises(ConfigError, match="unknown key 'loss.betta'"):
        build_loss(recipe(tmp_path, tiny_model_dir, pairs_file, "loss={name: dpo, betta: 0.2}"))
    with pytest.raises(ValueError, match="no 'data' block"):
        PreferenceTrainer(load_pref_recipe({"model": {"path": str(tiny_model_dir)}}), progress=False)


@pytest.mark.parametrize("path", sorted((ROOT / "recipes" / "prefs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_pref_recipe_loads_and_builds_its_loss(path):
    r = load_pref_recipe(path)
    build_loss(r)
    assert (r.dno is not None) == (path.name == "dno.yaml")
    assert (r.data is None) == (path.name == "dno.yaml")


def test_cli_validate_checks_a_preference_recipe(capsys):
    from entrolab.cli import main

    assert main(["validate", "recipes/prefs/dpo.yaml"]) == 0
    assert "preference loss=dpo, reference=precomputed" in capsys.readouterr().out
    assert main(["validate", "recipes/prefs/dpo.yaml", "loss.betta=1"]) == 2
    assert "unknown key 'loss.betta'" in capsys.readouterr().err
    assert main(["validate", "recipes/prefs/dpo.yaml", "train.batchsize=1"]) == 2
    assert "Did you mean 'batch_size'" in capsys.readouterr().err


def test_cli_train_prefs_then_resume(tmp_path, tiny_model_dir, pairs_file, capsys):
    from entrolab.cli import main

    args = ["train-prefs", "recipes/prefs/dpo.yaml", f"model.path={tiny_model_dir}", f"task={json.dumps(TASK)}",
            f"data.path={pairs_file}", "data.build=null", f"run_dir={tmp_path / 'cli'}", "train.device=cpu",
            "train.batch_size=4", "train.epochs=1"]
    assert main([*args, "--quiet"]) == 0
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "cli" / "checkpoints")] == [2]
    assert main([*args, "train.epochs=2", "--resume", "--quiet"]) == 1  # changes what a step computes: refused
    assert main([*args, "train.steps=3", "--resume", "--quiet"]) == 0
    assert metrics(tmp_path / "cli")[-1]["step"] == 3
    # `entrolab eval` of a preference run directory reads its recipe's task and eval settings
    assert main(["eval", str(tmp_path / "cli"), "eval.num_prompts=2", "eval.n_samples=2", "--label", "again"]) == 0
    again = json.loads((tmp_path / "cli" / "eval" / "again.json").read_text())
    assert again["summary"]["num_prompts"] == 2 and again["model"].endswith("step_000003")
    assert main(["train-prefs", "recipes/prefs/dpo.yaml", f"run_dir={tmp_path / 'none'}", "--resume", "--quiet"]) == 1
