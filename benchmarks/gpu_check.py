"""One prepared run for a GPU machine: rollout engines, the RL step, LoRA/checkpointing, log-prob parity.

The GPU machine has no internet, so everything is built in code: a random-init model of
Qwen2-0.5B's shape (vocab 151,936, hidden 896, 24 layers, 14 query / 2 KV heads, MLP 4864, tied
embeddings) and a char-level tokenizer padded with filler tokens to the model's vocabulary (a
random model samples any id; each must decode). Parts, each in its own try/except so a failing
part still leaves the others in the JSON:

  decode        tokens/s of ``rollout.engine`` builtin (on CUDA: the static decoder with CUDA graphs),
                static without graphs (``cuda_graphs=False``) and hf (``model.generate``), same prompts
  decode_profile  where a decode step's time goes at the decode batch: ms per call of the sampling
                math (``draw.next_token`` on [n, V] logits, top-p 1 and 0.9) and of the static decoder's
                forward (``static_model.decode_forward``), eager and (CUDA) replayed from a CUDA graph
  rl_step       one GRPO step (rollout + score + update) through entrolab's Trainer, its time/*
                metrics, completion tokens/s, peak CUDA memory and the update's MFU:
                6 × N × update tokens / time/update_s / the GPU's peak dense bf16 FLOP/s (``PEAK_BF16``),
                N = all parameters for full fine-tuning, trainable ones with LoRA (``mfu_basis`` says
                which), update tokens = real prompt + completion tokens of the batch
  rl_step_lora, rl_step_gc   the same step with ``model.lora`` / ``train.gradient_checkpointing``
  parity        max |Δ| between the sampler's log-probs and the training forward's, per engine
  update_parity one ``policy_update.update_policy`` step on a fixed batch of a tiny model built twice
                from one seed: loss and grad norm on the device (bf16 autocast on CUDA, as the trainer)
                vs fp32 on the CPU

    PYTHONPATH=src python benchmarks/gpu_check.py --out gpu_check.json            # GPU, full sizes
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/gpu_check.py --small --out /tmp/gc.json  # CPU dry run
"""

from __future__ import annotations

import argparse
import json
import platform
import string
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

QWEN2_05B = dict(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32_768,
                 rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
SMALL = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)

#: Workload sizes: (decode prompts, decode new tokens, RL prompts, group size, RL new tokens, RL steps).
#: Peak dense bf16 tensor-core FLOP/s by ``torch.cuda.get_device_name`` substring (vendor data sheets,
#: without sparsity); an unlisted device gets MFU "unknown".
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}

FULL_SIZES = dict(decode_prompts=512, decode_tokens=256, rl_prompts=16, group_size=8, rl_tokens=256, rl_steps=2)
SMALL_SIZES = dict(decode_prompts=8, decode_tokens=8, rl_prompts=2, group_size=2, rl_tokens=8, rl_steps=1)


def build_tokenizer(vocab_size: int):
    """The printable-ASCII char tokenizer (``models.tokenizer``'s layout: pad, bos, eos, unk, then
    characters), padded with ``<x{i}>`` filler tokens to ``vocab_size`` entries so every id decodes."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from entrolab.models.tokenizer import BOS, EOS, PAD, UNK, char_vocab

    vocab = char_vocab(string.printable)
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} < {len(vocab)} characters and special tokens")
    vocab.update({f"<x{i}>": i for i in range(len(vocab), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK, padding_side="left", split_special_tokens=True,
                                   clean_up_tokenization_spaces=False)


def build_model(shape: dict, tok, device: torch.device, dtype: torch.dtype):
    """A random-init ``Qwen2ForCausalLM`` of ``shape`` with the tokenizer's special ids."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**shape, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def prompts(n: int):
    from entrolab.types import Prompt

    return [Prompt(id=str(i), text=f"Using the numbers {i % 97}, {3 * i % 89}, {7 * i % 83}, make {i % 101}. "
                   "Answer:") for i in range(n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: Decode engines timed by part (a): label → (engine, extra keyword arguments).
DECODE_ENGINES = {"builtin": ("builtin", {}), "static_nograph": ("static", {"cuda_graphs": False}), "hf": ("hf", {})}


def decode(model, tok, device, sizes) -> dict:
    """(a) generated tokens/s of each engine on the same prompts, after a small warm-up call."""
    from entrolab.rollout.sampler import get_engine

    ps, out = prompts(sizes["decode_prompts"]), {}
    for label, (name, kw) in DECODE_ENGINES.items():
        sample = get_engine(name)
        sample(model, tok, ps[:4], group_size=1, max_new_tokens=4, generator=torch.Generator().manual_seed(0), **kw)
        _sync(device)
        t0 = time.perf_counter()
        batch = sample(model, tok, ps, group_size=1, max_new_tokens=sizes["decode_tokens"],
                       generator=torch.Generator().manual_seed(0), **kw)
        _sync(device)
        wall = time.perf_counter() - t0
        toks = int(batch.mask_BT.sum())
        out[label] = {"wall_s": wall, "tokens": toks, "tokens_per_s": toks / wall}
    out["builtin_over_hf"] = out["builtin"]["tokens_per_s"] / out["hf"]["tokens_per_s"]
    out["static_nograph_over_hf"] = out["static_nograph"]["tokens_per_s"] / out["hf"]["tokens_per_s"]
    return out


def _ms_per_call(fn, device, reps: int = 10) -> float:
    for _ in range(2):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / reps * 1e3


@torch.no_grad()
def decode_profile(model, device, sizes) -> dict:
    """(a) the parts of one decode step at batch n = decode_prompts, cache of 64 + decode_tokens slots."""
    from entrolab.rollout.draw import next_token
    from entrolab.rollout.static_decoder import compute_dtype
    from entrolab.rollout.static_model import DecoderWeights, decode_forward

    n, V = sizes["decode_prompts"], model.config.vocab_size
    g = torch.Generator(device=device).manual_seed(0)
    logits_nV = torch.randn(n, V, generator=g, device=device).to(compute_dtype(model, None))
    u_n = torch.rand(n, generator=g, device=device)
    out = {f"next_token_ms_top_p{p}": _ms_per_call(lambda p=p: next_token(logits_nV, u_n, top_p=p), device)
           for p in (1.0, 0.9)}
    del logits_nV
    W = DecoderWeights.from_model(model, fuse=device.type == "cuda")
    S = -(-(64 + sizes["decode_tokens"]) // 8) * 8
    cache = W.new_cache(n, S)
    valid_nS = torch.ones(n, S, dtype=torch.bool, device=device)
    tok_n = torch.randint(0, V, (n,), generator=g, device=device)
    pos_n, slot_1 = torch.full((n,), 60, device=device), torch.tensor([S // 2], device=device)

    def step():
        decode_forward(W, tok_n, pos_n, slot_1, valid_nS, cache)

    out["decode_forward_eager_ms"] = _ms_per_call(step, device)
    if device.type == "cuda":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        out["decode_forward_graph_ms"] = _ms_per_call(graph.replay, device)
    out.update(batch=n, slots=S)
    return out


def peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a device from ``PEAK_BF16`` (None when unlisted)."""
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def parity(model, tok, device) -> dict:
    """(d) max |Δ| between each engine's recorded log-probs and ``completion_stats`` (the training
    forward) on the same completions, over valid tokens; also the entropy difference."""
    from entrolab.models.forward import completion_stats
    from entrolab.rollout.sampler import get_engine

    out = {}
    for name in ("builtin", "hf"):
        batch = get_engine(name)(model, tok, prompts(8), group_size=2, max_new_tokens=32, temperature=1.0,
                                 generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            fwd = completion_stats(model, *(x.to(device) for x in (batch.prompt_ids_BL, batch.mask_prompt_BL,
                                                                  batch.completion_ids_BT, batch.mask_BT)),
                                   temperature=batch.temperature)
        m = batch.mask_BT
        out[name] = {"max_abs_dlogp": float((fwd.logp_BT.float().cpu() - batch.old_logp_BT)[m].abs().max()),
                     "max_abs_dentropy": float((fwd.entropy_BT.float().cpu() - batch.entropy_BT)[m].abs().max()),
                     "tokens": int(m.sum())}
    return out


def rl_step(folder: Path, device, sizes, *, lora: bool = False, gc: bool = False) -> dict:
    """(b)/(c) GRPO steps through the Trainer on the saved model; metrics of the last step."""
    from entrolab.config import load_recipe
    from entrolab.trainer import Trainer

    data = {"name": "gpu_check", "seed": 0, "run_dir": str(folder / f"run_lora{int(lora)}_gc{int(gc)}"),
            "model": {"path": str(folder / "model"), **({"lora": {"r": 16}} if lora else {})},
            "task": {"name": "countdown", "n_train": 256, "n_validation": 8, "n_test": 8},
            "rollout": {"prompts_per_step": sizes["rl_prompts"], "group_size": sizes["group_size"],
                        "max_new_tokens": sizes["rl_tokens"], "engine": "builtin"},
            "advantage": {"name": "grpo"}, "train": {"steps": sizes["rl_steps"], "gradient_checkpointing": gc,
                                                     "dump_rollouts_every": 0}}
    trainer = Trainer(load_recipe(data, []), progress=False)
    batches = []  # the step's batch, for the update's token count
    rollout = trainer.rollout
    trainer.rollout = lambda: batches.append(rollout()) or batches[-1]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = [trainer.train_step() for _ in range(sizes["rl_steps"])]  # the first one warms up
    last = {k: v for k, v in steps[-1].items() if k.startswith("time/")}
    last["completion_tokens"] = steps[-1].get("rollout/len_mean", 0.0) * sizes["rl_prompts"] * sizes["group_size"]
    if device.type == "cuda":
        last["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    last["first_step_s"] = steps[0]["time/step_s"]
    last.update(update_mfu(trainer.model, batches[-1], last["time/update_s"], device, lora=lora))
    return last


def update_mfu(model, batch, update_s: float, device, *, lora: bool) -> dict:
    """MFU of the update: 6·N·tokens FLOPs (forward 2N + backward 4N per token, attention excluded) over
    ``update_s``; N counts trainable parameters with LoRA (the frozen base's backward, which still
    propagates activation gradients, is then left out, so it understates) and all parameters otherwise."""
    params = [p for p in model.parameters() if p.requires_grad] if lora else list(model.parameters())
    n = sum(p.numel() for p in params)
    tokens = int(batch.mask_prompt_BL.sum()) + int(batch.mask_BT.sum())
    flops = 6.0 * n * tokens
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    return {"update_tokens": tokens, "mfu_params": n, "mfu_basis": "trainable" if lora else "all",
            "update_flops": flops, "update_tflops_per_s": flops / update_s / 1e12,
            "mfu": flops / update_s / peak if peak else "unknown"}


def update_parity(tok, device) -> dict:
    """(d) one update step's loss (and grad norm) on ``device`` vs the fp32 CPU path: the SMALL model
    built twice from seed 0, one fixed GRPO-style batch (fixed tokens and advantages, no re-scoring,
    so each side's own forward gives old_logp), AdamW lr 1e-3; bf16 autocast on CUDA as the trainer."""
    from entrolab.components import build_components
    from entrolab.config import load_recipe
    from entrolab.policy_update import UpdateSettings, update_policy
    from entrolab.types import Prompt, RolloutBatch

    data = {"name": "gpu_check_parity", "seed": 0, "model": {"path": "unused"},
            "task": {"name": "countdown", "n_train": 16, "n_validation": 4, "n_test": 4},
            "advantage": {"name": "grpo"}}
    comps = build_components(load_recipe(data, []))
    g = torch.Generator().manual_seed(0)
    B, Lp, T = 8, 12, 16
    lengths_B = torch.tensor([16, 3, 9, 16, 1, 12, 16, 7])
    mask_BT = torch.arange(T)[None] < lengths_B[:, None]
    mask_prompt_BL = torch.arange(Lp)[None] >= torch.tensor([0, 4, 0, 2, 6, 0, 1, 3])[:, None]

    def run_on(dev, amp: bool) -> dict:
        batch = RolloutBatch(
            prompts=[Prompt(id=str(i), text="x") for i in range(B // 4)], group_id_B=torch.arange(B) // 4,
            prompt_ids_BL=torch.randint(4, SMALL["vocab_size"], (B, Lp), generator=g.manual_seed(1)),
            mask_prompt_BL=mask_prompt_BL, mask_BT=mask_BT,
            completion_ids_BT=torch.randint(4, SMALL["vocab_size"], (B, T), generator=g.manual_seed(2)),
            texts=[""] * B, stop_reasons=["length"] * B,
            adv_BT=torch.linspace(-1, 1, B)[:, None].expand(B, T).contiguous())
        model = build_model(SMALL, tok, dev, torch.float32).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        m = update_policy(model, opt, comps, batch, UpdateSettings(grad_clip=1.0, autocast=amp),
                          generator=torch.Generator().manual_seed(0), requires=comps.requires())
        # At ratio 1 the surrogate's value is −mean(adv) whatever the model; nll and the gradient are not.
        return {"loss": m["loss/total"], "nll": m["policy/nll"], "grad_norm": m["optim/grad_norm"]}

    cpu = run_on(torch.device("cpu"), False)
    dev = run_on(device, device.type == "cuda")
    return {"cpu_fp32": cpu, "device": dev, "abs_dloss": abs(cpu["loss"] - dev["loss"]),
            "abs_dnll": abs(cpu["nll"] - dev["nll"]),
            "rel_dgrad_norm": abs(cpu["grad_norm"] - dev["grad_norm"]) / max(cpu["grad_norm"], 1e-12)}


def run(*, small: bool, out: Path, device: str = "auto") -> dict:
    from entrolab.models.loading import resolve_device

    dev = resolve_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    shape, sizes = (SMALL, SMALL_SIZES) if small else (QWEN2_05B, FULL_SIZES)
    result: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
                                or platform.machine(), "dtype": str(dtype)},
                    "shape": shape, "sizes": sizes, "errors": {}}
    try:
        import transformers
        result["machine"]["transformers"] = transformers.__version__
    except ImportError:  # the run below then fails part by part, which the JSON records
        pass
    tok = build_tokenizer(shape["vocab_size"])
    model = build_model(shape, tok, dev, dtype)
    result["params"] = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        parts = {"decode": lambda: decode(model, tok, dev, sizes),
                 "decode_profile": lambda: decode_profile(model, dev, sizes), "parity": lambda: parity(model, tok, dev),
                 "update_parity": lambda: update_parity(build_tokenizer(SMALL["vocab_size"]), dev)}
        for name, fn in parts.items():
            _part(result, name, fn)
        model.save_pretrained(folder / "model")
        tok.save_pretrained(folder / "model")
        del model
        for name, kw in (("rl_step", {}), ("rl_step_lora", {"lora": True}), ("rl_step_gc", {"gc": True})):
            _part(result, name, lambda: rl_step(folder, dev, sizes, **kw))
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    return result


def _part(result: dict, name: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        result[name] = fn()
    except Exception as err:  # one failing part must not lose the others (the JSON records why)
        result["errors"][name] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-8)}"
    result.setdefault("part_wall_s", {})[name] = time.perf_counter() - t0


def table(r: dict) -> str:
    rows = [f"gpu_check on {r['machine']['device']} ({r['machine']['dtype']}), {r.get('params', 0) / 1e6:.1f}M params"]
    for eng in DECODE_ENGINES:
        if "decode" in r:
            d = r["decode"][eng]
            rows.append(f"decode {eng:14s} {d['tokens_per_s']:12.1f} tok/s  ({d['tokens']} tokens, {d['wall_s']:.2f} s)")
    if "decode" in r:
        rows.append(f"decode builtin / hf {r['decode']['builtin_over_hf']:.2f}x   "
                    f"static_nograph / hf {r['decode']['static_nograph_over_hf']:.2f}x")
    if "decode_profile" in r:
        d = r["decode_profile"]
        rows.append(f"decode step at batch {d['batch']}: next_token {d['next_token_ms_top_p1.0']:.2f} ms "
                    f"(top-p 0.9: {d['next_token_ms_top_p0.9']:.2f} ms), forward {d['decode_forward_eager_ms']:.2f} ms eager"
                    + (f", {d['decode_forward_graph_ms']:.2f} ms graph" if "decode_forward_graph_ms" in d else ""))
    for eng in ("builtin", "hf"):
        if "parity" in r:
            p = r["parity"][eng]
            rows.append(f"parity {eng:8s} max|Δlogp| {p['max_abs_dlogp']:.2e}  max|ΔH| {p['max_abs_dentropy']:.2e}")
    if "update_parity" in r:
        u = r["update_parity"]
        rows.append(f"update parity  loss cpu {u['cpu_fp32']['loss']:.6f}  device {u['device']['loss']:.6f}  "
                    f"|Δ| {u['abs_dloss']:.2e}  nll |Δ| {u['abs_dnll']:.2e}  grad-norm rel Δ {u['rel_dgrad_norm']:.2e}")
    for name in ("rl_step", "rl_step_lora", "rl_step_gc"):
        if name in r:
            s = r[name]
            mem = f"  peak {s['peak_mem_gib']:.2f} GiB" if "peak_mem_gib" in s else ""
            mfu = s.get("mfu", "unknown")
            mfu = f"{100 * mfu:.1f}%" if isinstance(mfu, float) else mfu
            rows.append(f"{name:12s} step {s['time/step_s']:.2f} s  {s['time/tokens_per_s']:.1f} completion tok/s"
                        f"  (rollout {s['time/rollout_s']:.2f} s, update {s['time/update_s']:.2f} s, "
                        f"MFU {mfu} of 6·N[{s.get('mfu_basis', '?')}]·tokens){mem}")
    rows += [f"FAILED {k}: {v.splitlines()[0]}" for k, v in r["errors"].items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny model and workload (a CPU dry run)")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    result = run(small=args.small, out=args.out, device=args.device)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
