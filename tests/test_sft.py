"""Supervised training of testbed base models (``entrolab.sft``) on a real toy Task."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch

from entrolab.config import ConfigError
from entrolab.models.loading import load_policy
from entrolab.models.tiny import build_tiny_model
from entrolab.models.tokenizer import build_char_tokenizer
from entrolab.rollout.sampler import sample
from entrolab.sft import (build_base_model, collate, completion_nll, encode_pair, load_sft_cfg, lr_factor, run_sft,
                          train_sft)
from entrolab.types import Prompt, Task, Verdict


class ReverseTask:
    """Reverse a string over 'abc': prompt 'abc:' → completion 'cba'. A complete Task."""

    name = "reverse"
    answer_marker = None

    def __init__(self, *, length: int = 3):
        self.length = length

    def prompts(self, split: str) -> list[Prompt]:
        words = ["".join(w) for w in itertools.product("abc", repeat=self.length)]
        return [Prompt(f"{split}-{i}", w + ":") for i, w in enumerate(words)]

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        want = prompt.text[:-1][::-1]
        ok = completion == want
        return Verdict(float(ok), ok, completion, "ok" if ok else "wrong_value")

    def solutions(self, prompt: Prompt) -> list[str]:
        return [prompt.text[:-1][::-1]]

    def demonstration(self, prompt: Prompt, rng: random.Random) -> str:
        return prompt.text[:-1][::-1]

    def charset(self) -> str:
        return "abc:"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models are latency-bound; one thread avoids waiting on a busy shared core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_toy_task_is_a_task():
    assert isinstance(ReverseTask(), Task)


def test_encode_pair_and_collate_by_hand():
    """Char ids: <pad>0 <bos>1 <eos>2 <unk>3 a4 b5 c6 :7. Pair ('ab:', 'ba') → [1,4,5,7,5,4,2], 4 prompt ids.

    The loss mask is True on the completion and EOS (positions 4..6); the second row is right-padded.
    """
    tok = build_char_tokenizer("abc:")
    assert encode_pair(tok, "ab:", "ba") == ([1, 4, 5, 7, 5, 4, 2], 4)
    ids, mask, mask_loss = collate([encode_pair(tok, "ab:", "ba"), encode_pair(tok, "a:", "a")], pad_id=0)
    assert ids.tolist() == [[1, 4, 5, 7, 5, 4, 2], [1, 4, 7, 4, 2, 0, 0]]
    assert mask.tolist() == [[True] * 7, [True] * 5 + [False] * 2]
    assert mask_loss.tolist() == [[False] * 4 + [True] * 3, [False] * 3 + [True] * 2 + [False] * 2]


def test_completion_nll_equals_hf_label_loss():
    """Reference identity: our masked token-mean NLL == HF's loss with labels -100 outside the completion."""
    tok = build_char_tokenizer("abc:")
    model = build_tiny_model("tiny", tok, seed=0)
    ids, mask, mask_loss = collate([encode_pair(tok, "abc:", "cba"), encode_pair(tok, "a:", "aa")], pad_id=0)
    labels = ids.masked_fill(~mask_loss, -100)
    with torch.no_grad():
        ours = completion_nll(model, ids, mask, mask_loss)
        hf = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
    assert ours.item() == pytest.approx(hf.item(), abs=1e-5)
    with pytest.raises(ValueError, match="right-padded"):
        completion_nll(model, ids.flip(1), mask.flip(1), mask_loss.flip(1))


def test_lr_factor_by_hand():
    """warmup 4: steps 0..3 → 1/4, 2/4, 3/4, 1; cosine over the 8 remaining steps ends at 0.1."""
    f = [lr_factor(s, steps=12, warmup=4, schedule="cosine") for s in range(13)]
    assert f[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert f[8] == pytest.approx(1 - 0.9 * 0.5 * (1 - math.cos(math.pi / 2)))  # halfway: 0.55
    assert f[12] == pytest.approx(0.1)
    assert lr_factor(8, steps=12, warmup=4, schedule="linear") == pytest.approx(0.55)
    assert lr_factor(11, steps=12, warmup=4, schedule="constant") == 1.0


def test_sft_learns_the_toy_task_and_is_repeatable():
    """Loss falls and the trained model reverses every string greedily; same seed → same losses."""
    task = ReverseTask()
    tok = build_char_tokenizer(task.charset())
    pairs = [(p.text, task.demonstration(p, None)) for p in task.prompts("train")]
    model = build_tiny_model("tiny", tok, seed=0)
    out = train_sft(model, tok, pairs, steps=120, batch_size=27, lr=3e-3, warmup=10, seed=0, device="cpu")
    assert out["loss_last"] < 0.05 < 1.0 < out["loss_first"]
    prompts = task.prompts("test")
    b = sample(model, tok, prompts, group_size=1, max_new_tokens=6, generator=None, greedy=True)
    acc = sum(task.verify(p, t).correct for p, t in zip(prompts, b.texts)) / len(prompts)
    assert acc == 1.0 and set(b.stop_reasons) == {"eos"}  # it also learned to stop
    again = train_sft(build_tiny_model("tiny", tok, seed=0), tok, pairs, steps=5, batch_size=8, seed=1)
    twice = train_sft(build_tiny_model("tiny", tok, seed=0), tok, pairs, steps=5, batch_size=8, seed=1)
    assert again["losses"] == twice["losses"]


def test_build_base_model_caches_by_settings(tmp_path):
    task, out = ReverseTask(), tmp_path / "base"
    kw = dict(size="tiny", steps=3, batch_size=8, warmup=1, demos_per_prompt=1, seed=0, device="cpu")
    path = build_base_model(out, task, **kw)
    meta = json.loads((path / "sft.json").read_text())
    assert meta["settings"]["steps"] == 3 and meta["task"] == "reverse" and meta["num_pairs"] == 27
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert build_base_model(out, task, **kw) == path  # same settings: reused, not retrained
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    model, tok = load_policy(path, device="cpu")  # the cached folder is a loadable HF model
    assert tok.decode(tok("ab:")["input_ids"], skip_special_tokens=True) == "ab:"
    build_base_model(out, task, **dict(kw, steps=4))  # a changed setting retrains
    assert json.loads((path / "sft.json").read_text())["settings"]["steps"] == 4
    build_base_model(out, ReverseTask(length=2), **dict(kw, steps=4))  # changed task data retrains
    assert json.loads((path / "sft.json").read_text())["num_pairs"] == 9
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    build_base_model(out, ReverseTask(length=2), force=True, **dict(kw, steps=4))
    assert (path / "model.safetensors").stat().st_mtime_ns != stamp
    assert not list(tmp_path.glob(".base.tmp-*"))  # the temp folder was renamed away


def test_build_base_model_refuses_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        build_base_model(tmp_path, ReverseTask(), steps=1, batch_size=2, device="cpu")


def test_sft_config_and_run_sft(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'stepz'.*Did you mean 'steps'"):
        load_sft_cfg({"stepz": 3})
    with pytest.raises(ConfigError, match="'lr'"):
        load_sft_cfg(None, ["lr=-1"])
    assert load_sft_cfg({"task": "countdown"}).task == {"name": "countdown"}
    cfg_file = tmp_path / "sft.yaml"
    cfg_file.write_text(f"out_dir: {tmp_path}/{{task}}-{{size}}-s{{seed}}\nsteps: 2\nbatch_size: 4\n")
    cfg = load_sft_cfg(cfg_file, ["task.name=test_sft:ReverseTask", "task.length=2", "lr=1e-3", "device=cpu"])
    assert cfg.lr == 1e-3 and cfg.task == {"name": "test_sft:ReverseTask", "length": 2}
    path = run_sft(cfg, progress=None)
    assert path == tmp_path / "test_sft_ReverseTask-tiny-s0"
    assert json.loads((path / "sft.json").read_text())["num_pairs"] == 9 * cfg.demos_per_prompt
