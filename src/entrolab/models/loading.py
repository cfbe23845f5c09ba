"""Loading any Hugging Face causal LM (a testbed folder or a hub/local checkpoint) as a policy.

``load_policy`` returns a model and a tokenizer that the sampler and trainer can use without
further checks: the tokenizer pads on the left, has a pad token, and the EOS id is known.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from entrolab.registry import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# transformers renamed ``torch_dtype`` to ``dtype`` in 4.56; pyproject allows >= 4.51.
_DTYPE_KW = "dtype" if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"


@contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Hide transformers' per-shard load/save progress bars (noise inside our own phase bars)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA if available else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` as given.

    Raises ``ConfigError`` when CUDA is asked for but not available (rather than failing later
    inside the first forward pass).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {spec!r}; use 'auto', 'cpu' or 'cuda'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {spec!r}; use 'auto', 'cpu' or 'cuda'")
    return device


def resolve_dtype(spec: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` → bfloat16 on a CUDA device that supports it, else float32."""
    if isinstance(spec, torch.dtype):
        return spec
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if spec not in _DTYPES:
        raise ConfigError(f"unknown dtype {spec!r}; use 'auto', {', '.join(map(repr, _DTYPES))}")
    return _DTYPES[spec]


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, model: Any | None = None) -> PreTrainedTokenizerBase:
    """Make ``tokenizer`` usable for batched generation: left padding, a pad token, a known EOS.

    A missing pad token falls back to EOS (standard for GPT-2/Llama checkpoints: pad positions are
    masked everywhere, so sharing the id is harmless). A missing EOS falls back to the model's
    ``generation_config``/``config`` EOS id; if none is known this raises, because completions
    could then never stop.
    """
    tokenizer.padding_side = "left"
    if tokenizer.eos_token_id is None and model is not None:
        eos = _model_eos_id(model)
        if eos is not None:
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no EOS token and the model config names none: "
                          "completions could never stop; give a tokenizer with an eos_token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _model_eos_id(model: Any) -> int | None:
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        if eos is not None:
            return int(eos)
    return None


def load_policy(
    path: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from ``path`` (a local HF folder or a hub id).

    Args:
        path: model folder or hub id, loaded with ``AutoModelForCausalLM.from_pretrained``.
        tokenizer_path: tokenizer folder or hub id; defaults to ``path``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see ``resolve_device``).
        dtype: ``"auto"`` (bf16 on a capable GPU, else fp32), ``"float32"`` or ``"bfloat16"``.

    Returns:
        ``(model, tokenizer)``: the model on ``device`` in eval mode, the tokenizer prepared by
        ``prepare_tokenizer`` (left padding, a pad token, a known EOS id).
    """
    path = str(path)
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not (Path(path).expanduser() / "config.json").exists():
        raise ConfigError(f"model path {path!r} is not a Hugging Face model folder (no config.json)")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or path))
    with quiet_hf_progress():
        model = AutoModelForCausalLM.from_pretrained(path, **{_DTYPE_KW: dt})
    model.to(dev)
    model.eval()
    prepare_tokenizer(tokenizer, model)
    # Keep the model's idea of pad/eos in sync with the tokenizer, so HF ``generate`` agrees with
    # our sampler about when a sequence ends.
    if getattr(model, "generation_config", None) is not None:
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config.eos_token_id is None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def format_prompt(tokenizer: PreTrainedTokenizerBase, text: str, *, chat_template: bool = False) -> str:
    """The string to feed the model for prompt ``text``.

    With ``chat_template`` the text becomes one user turn rendered by the tokenizer's chat
    template with the assistant generation prompt appended; otherwise it is returned unchanged.
    """
    if not chat_template:
        return text
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("model.chat_template is true but the tokenizer has no chat template; "
                          "set model.chat_template: false for base models")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
