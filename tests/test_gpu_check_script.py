"""benchmarks/gpu_check.py: its CUDA-independent path runs here (``--small``, CPU) and writes every part."""

from __future__ import annotations

import importlib.util
import json
import string
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_qwen2_shape_is_the_0_5b_model(gc):
    """The full-size shape has Qwen2-0.5B's parameter count (~494M with tied embeddings), checked on
    the meta device so nothing is allocated."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**gc.QWEN2_05B))
    n = sum(p.numel() for p in model.parameters())
    assert model.config.vocab_size == 151_936
    assert 490e6 < n < 500e6, n


def test_tokenizer_decodes_every_model_id_and_round_trips_text(gc):
    tok = gc.build_tokenizer(600)
    assert len(tok) == 600
    text = string.printable
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode([599]) == "<x599>"  # a filler id a random model may sample
    with pytest.raises(ValueError, match="vocab_size 10"):
        gc.build_tokenizer(10)


def test_small_run_writes_every_part(gc, tmp_path):
    out = tmp_path / "gc.json"
    result = gc.run(small=True, out=out, device="cpu")
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["errors"] == {}
    sizes = gc.SMALL_SIZES
    for eng in ("builtin", "static_nograph", "hf"):
        d = result["decode"][eng]
        assert 0 < d["tokens"] <= sizes["decode_prompts"] * sizes["decode_tokens"] and d["tokens_per_s"] > 0
    prof = result["decode_profile"]
    assert prof["batch"] == sizes["decode_prompts"] and prof["slots"] % 8 == 0 and prof["slots"] >= 64 + sizes["decode_tokens"]
    assert min(prof["next_token_ms_top_p1.0"], prof["next_token_ms_top_p0.9"], prof["decode_forward_eager_ms"]) > 0
    for eng in ("builtin", "hf"):
        # fp32 on CPU: the sampler's log-probs are the training forward's up to rounding.
        assert result["parity"][eng]["max_abs_dlogp"] < 1e-4
        assert result["parity"][eng]["tokens"] > 0
    for name in ("rl_step", "rl_step_lora", "rl_step_gc"):
        s = result[name]
        parts = sum(v for k, v in s.items()
                    if k.startswith("time/") and k.endswith("_s") and k not in ("time/step_s", "time/tokens_per_s"))
        assert parts == pytest.approx(s["time/step_s"], rel=1e-6)
        assert s["time/tokens_per_s"] > 0
        assert s["mfu"] == "unknown" and s["update_flops"] == 6.0 * s["mfu_params"] * s["update_tokens"] > 0
    assert result["rl_step_lora"]["mfu_basis"] == "trainable" and result["rl_step"]["mfu_basis"] == "all"
    assert result["rl_step_lora"]["mfu_params"] < result["rl_step"]["mfu_params"] == result["params"]
    # CPU against CPU: the same fp32 computation twice, so the two update steps agree exactly.
    u = result["update_parity"]
    assert u["abs_dloss"] == 0 and u["abs_dnll"] == 0 and u["rel_dgrad_norm"] == 0 and u["cpu_fp32"]["nll"] > 0


def test_update_mfu_hand_computed_and_peak_table(gc, make_batch):
    """6 × 4 params × (2 prompt + 5 completion tokens) = 168 FLOPs in 2 s is 84 FLOP/s; an H200 is
    looked up by name, an unknown GPU is None."""
    model = torch.nn.Linear(1, 2)  # 4 parameters
    batch = make_batch([1.0, 0.0], lengths=[3, 2])  # 2 prompt tokens per row (conftest), 5 completion tokens
    batch.mask_prompt_BL[1, 0] = False
    out = gc.update_mfu(model, batch, 2.0, torch.device("cpu"), lora=False)
    assert out["update_tokens"] == 3 + 5 and out["update_flops"] == 6 * 4 * 8 and out["mfu"] == "unknown"
    assert out["update_tflops_per_s"] == pytest.approx(6 * 4 * 8 / 2 / 1e12)
    model.bias.requires_grad_(False)
    assert gc.update_mfu(model, batch, 2.0, torch.device("cpu"), lora=True)["mfu_params"] == 2
    assert gc.peak_flops("NVIDIA H200") == 989e12 and gc.peak_flops("Some GPU") is None


def test_a_failing_part_is_recorded_and_the_rest_kept(gc):
    result = {"errors": {}}
    gc._part(result, "ok", lambda: {"x": 1})
    gc._part(result, "bad", lambda: 1 / 0)
    assert result["ok"] == {"x": 1} and "bad" not in result
    assert result["errors"]["bad"].startswith("ZeroDivisionError")
    assert "FAILED bad: ZeroDivisionError" in gc.table({**result, "machine": {"device": "cpu", "dtype": "f32"}})
