"""LoRA through peft (model.lora) and activation checkpointing (train.gradient_checkpointing) on CPU
with the tiny testbed models: only adapters train, the reference policy is the base weights with the
adapters disabled, B = 0 starts at the base model, resume is exact, eval reads LoRA checkpoints, and
checkpointed gradients equal the plain ones."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from entrolab.models.forward import completion_stats
from entrolab.trainer import Trainer
from test_trainer import recipe, weights

pytest.importorskip("peft")

from entrolab.models.loading import apply_lora, enable_activation_checkpointing, reference_policy  # noqa: E402

LORA = {"model.lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}}


def _inputs(tok):
    prompts = ["12,34>46:", "5,6>30:"]
    completions = ["12+34#", "5*6=30#"]
    p = [tok(x, add_special_tokens=False)["input_ids"] for x in prompts]
    c = [tok(x, add_special_tokens=False)["input_ids"] for x in completions]
    L, T = max(map(len, p)), max(map(len, c))
    pid = torch.tensor([[tok.pad_token_id] * (L - len(x)) + x for x in p])  # left-padded prompts
    pm = torch.tensor([[False] * (L - len(x)) + [True] * len(x) for x in p])
    cid = torch.tensor([x + [tok.pad_token_id] * (T - len(x)) for x in c])
    cm = torch.tensor([[True] * len(x) + [False] * (T - len(x)) for x in c])
    return pid, pm, cid, cm


def _stats(model, tok, **kw):
    with torch.no_grad():
        return completion_stats(model, *_inputs(tok), temperature=1.0, **kw)


def test_lora_zero_B_first_forward_equals_base(tiny_lm):
    """B is initialised to 0, so W + (α/r)·B·A = W: log-probs and entropies are bit-identical."""
    base, tok = tiny_lm
    lora = apply_lora(copy.deepcopy(base), r=4, alpha=8)
    assert all(float(p.detach().abs().max()) == 0 for n, p in lora.named_parameters() if "lora_B" in n)
    a, b = _stats(base, tok), _stats(lora, tok)
    assert torch.equal(a.logp_BT, b.logp_BT) and torch.equal(a.entropy_BT, b.entropy_BT)


def test_lora_reference_is_base_with_adapters_disabled(tiny_lm):
    """With non-zero adapters the policy moves; with them disabled it is exactly the base model."""
    base, tok = tiny_lm
    lora = apply_lora(copy.deepcopy(base), r=4, alpha=8)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen))
    moved = _stats(lora, tok, need_entropy=False).logp_BT
    with reference_policy(lora, None) as ref:
        ref_logp = _stats(ref, tok, need_entropy=False).logp_BT
    assert not torch.allclose(moved, ref_logp)
    assert torch.equal(ref_logp, _stats(base, tok, need_entropy=False).logp_BT)
    assert not torch.equal(_stats(lora, tok, need_entropy=False).logp_BT, ref_logp)  # adapters back on
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with reference_policy(base, None):
            pass


def test_lora_only_adapters_train_and_ref_is_not_a_second_model(tmp_path):
    """Three LoRA steps with a KL-to-reference regularizer: the base weights stay bit-identical to the
    initial model, the adapters move, no reference model is loaded, the checkpoint holds the adapters
    and merged weights that differ from the base."""
    r = recipe(tmp_path, "lora", **LORA, **{"objective.regularizers": [{"name": "kl_to_ref", "beta": 0.1}]})
    trainer = Trainer(r, progress=False)
    assert trainer.ref_model is None and "ref_logp" in trainer.requires
    n_opt = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
    n_lora = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert n_opt == n_lora > 0
    run_dir = trainer.train()
    w0 = load_file(str(run_dir / "initial_model" / "model.safetensors"))
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in trainer.model.state_dict().items() if "lora_" not in k}
    for k, v in w0.items():
        assert torch.equal(base[k], v), k
    ckpt = run_dir / "checkpoints" / "step_000003"
    adapters = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    assert "adapter/adapter_model.safetensors" in json.loads((ckpt / "manifest.json").read_text())["files"]
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapters.items())
    merged = weights(run_dir, 3)
    assert merged.keys() == w0.keys()
    assert any(not torch.equal(merged[k], w0[k]) for k in w0)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["kl/ref_k1"] == pytest.approx(0.0, abs=1e-6)  # step 1: adapters still 0


def test_item_e_lora_and_checkpointing_in_recipe_and_key_numbers(tmp_path):
    """The resolved recipe and the report's key numbers state the LoRA and checkpointing choices."""
    import yaml

    from entrolab.report.rundata import load_run
    from entrolab.report.run_report import key_numbers

    run_dir = Trainer(recipe(tmp_path, "e", **LORA, **{"train.steps": 1, "train.gradient_checkpointing": True}),
                      progress=False).train()
    resolved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert resolved["model"]["lora"] == {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear"}
    assert resolved["train"]["gradient_checkpointing"] is True
    rows = {r[0]: r[2] for r in key_numbers(load_run(run_dir))[1]}
    assert rows["fine-tuning"] == "LoRA r=4, alpha=8.0, dropout=0.0, modules=all-linear"
    assert rows["gradient checkpointing"] == "on"
    assert (rows["rollout engine"], rows["model dtype"], rows["log-prob chunk size"]) == ("builtin", "auto", "auto")


def test_lora_resume_gives_identical_adapters(tmp_path):
    """3 steps + --resume + 3 steps == 6 straight steps, bit for bit, with LoRA."""
    over = {**LORA, "train.updates_per_batch": 2, "train.mini_batch_size": 8}
    straight = Trainer(recipe(tmp_path, "straight", **over, **{"train.steps": 6}), progress=False).train()
    Trainer(recipe(tmp_path, "resumed", **over, **{"train.steps": 3}), progress=False).train()
    resumed = Trainer(recipe(tmp_path, "resumed", **over, **{"train.steps": 6}), resume=True, progress=False).train()
    for name in ("adapter/adapter_model.safetensors", "model.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step_000006" / name))
        b = load_file(str(resumed / "checkpoints" / "step_000006" / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_lora_eval_of_run_dir_uses_merged_weights(tmp_path, tiny_lm):
    """`entrolab eval <run dir>` loads the LoRA checkpoint's merged weights: they give the same
    log-probs as the live adapter model (up to the rounding of W + ΔW)."""
    from entrolab.eval_runner import evaluate_path
    from entrolab.models.loading import load_policy

    trainer = Trainer(recipe(tmp_path, "lora_eval", **LORA, **{"train.steps": 2}), progress=False)
    run_dir = trainer.train()
    out = evaluate_path(run_dir, recipe=None, overrides=[], label="final", out=None)
    assert json.loads(out.read_text())["summary"]
    merged, tok = load_policy(str(run_dir / "checkpoints" / "step_000002"), device="cpu")
    a = _stats(merged, tok).logp_BT
    b = _stats(trainer.model.eval(), tok).logp_BT
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_lm, lora):
    """Recomputing activations in backward (HF gradient_checkpointing_enable) gives the gradients of
    the plain backward: same ops, same order, so equal to float rounding (atol 1e-7)."""
    base, tok = tiny_lm
    grads, saved = [], []
    for ckpt in (False, True):
        torch.manual_seed(1)
        model = copy.deepcopy(base)
        if lora:
            model = apply_lora(model, r=4, alpha=8)
            with torch.no_grad():  # non-zero B so the adapters' A get gradients too
                for n, p in model.named_parameters():
                    if "lora_B" in n:
                        p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
        if ckpt:
            enable_activation_checkpointing(model)
        model.train()
        n_saved = [0]

        def pack(t, n_saved=n_saved):
            n_saved[0] += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = completion_stats(model, *_inputs(tok), temperature=1.0)
        saved.append(n_saved[0])
        mask = _inputs(tok)[3]
        ((out.logp_BT * mask).sum() + (out.entropy_BT * mask).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert saved[1] < saved[0], saved  # the decoder layer's activations really were not kept
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=0, atol=1e-7)


def test_gradient_checkpointing_switch_reaches_the_model(tmp_path):
    trainer = Trainer(recipe(tmp_path, "gc", **{"train.gradient_checkpointing": True, "train.steps": 1}),
                      progress=False)
    assert _checkpointing(trainer.model)
    assert not _checkpointing(Trainer(recipe(tmp_path, "plain", **{"train.steps": 1}), progress=False).model)


def _checkpointing(model) -> bool:
    # transformers 5 renamed is_gradient_checkpointing (deprecated) to is_activation_checkpointing
    if hasattr(model, "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(model.is_gradient_checkpointing)


def test_lora_recipe_block_is_strict_and_peft_missing_is_named(tiny_lm, monkeypatch):
    import sys

    from entrolab.config import load_recipe
    from entrolab.registry import ConfigError

    assert load_recipe({"name": "x"}, []).model.lora is None  # default: full fine-tuning
    with pytest.raises(Exception, match=r"model\.lora\.rank"):
        load_recipe({"name": "x", "model": {"lora": {"rank": 4}}}, [])
    monkeypatch.setitem(sys.modules, "peft", None)  # as if the optional package were not installed
    with pytest.raises(ConfigError, match=r"pip install 'entrolab\[lora\]'"):
        apply_lora(copy.deepcopy(tiny_lm[0]))
