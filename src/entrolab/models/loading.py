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


# ---------------------------------------------------------------------------------------------- LoRA
#: Sub-folder of a checkpoint holding a LoRA policy's adapters (``save_model``).
ADAPTER_DIR = "adapter"

def _peft():
    try:
        import peft
    except ImportError as err:
        raise ConfigError("model.lora needs the optional package 'peft': pip install 'entrolab[lora]'") from err
    return peft


def is_lora(model: Any) -> bool:
    """True if ``model`` is a ``peft`` model carrying LoRA adapters (see ``apply_lora``)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def apply_lora(model: torch.nn.Module, *, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               target_modules: str | list[str] = "all-linear",
               adapter_path: str | Path | None = None) -> torch.nn.Module:
    """Wrap ``model`` with trainable LoRA adapters (Hu et al. 2021, arXiv 2106.09685: W + (α/r)·B·A).

    The base weights are frozen (``requires_grad`` False) and never modified; B starts at zero, so
    the wrapped model computes exactly the base model until the first update. With
    ``adapter_path`` (a checkpoint written by ``save_model``) the saved adapters are loaded instead
    of fresh ones, trainable, for an exact resume. ``target_modules="all-linear"`` adapts every
    linear layer except the output head.
    """
    peft = _peft()
    if adapter_path is not None:
        return peft.PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True)
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                          task_type="CAUSAL_LM")
    return peft.get_peft_model(model, cfg)


@contextmanager
def reference_policy(model: torch.nn.Module, ref_model: torch.nn.Module | None) -> Iterator[torch.nn.Module]:
    """The frozen reference policy π_ref: ``ref_model`` when one is loaded, else the LoRA policy
    ``model`` with its adapters disabled, i.e. the base weights (no second copy in memory)."""
    if ref_model is not None:
        yield ref_model
        return
    if not is_lora(model):
        raise ValueError("no reference model loaded and the policy has no LoRA adapters to disable")
    with model.disable_adapter():
        yield model


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The plain HF state dict of a LoRA ``model`` with W + ΔW merged, computed out of place.

    peft's ``merge_adapter``/``unmerge_adapter`` would write into the base weights, and the unmerge
    (W + ΔW − ΔW) is not bit-exact, which would break exact resume; this leaves them untouched.
    """
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    for name, mod in base.named_modules():
        if isinstance(mod, LoraLayer):
            w = mod.get_base_layer().weight.detach()
            delta = sum(mod.get_delta_weight(a).detach() for a in mod.active_adapters if a in mod.lora_A)
            merged[f"{name}.weight"] = (w + delta).to(w.dtype)
    out: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        out[plain] = merged.get(plain, value)
    return out


def save_model(model: torch.nn.Module, folder: str | Path) -> None:
    """Write ``model`` to ``folder`` as a plain HF model (``model.safetensors``, what eval loads).

    A LoRA model writes its merged weights there and its adapters to ``folder/adapter``
    (``ADAPTER_DIR``), which a resume loads onto the base weights (``apply_lora(adapter_path=...)``)
    to continue exactly. (In a sub-folder: an ``adapter_config.json`` next to ``config.json`` makes
    ``from_pretrained`` load the adapter's base model instead of the merged weights.)
    """
    with quiet_hf_progress():
        if not is_lora(model):
            model.save_pretrained(folder, safe_serialization=True)
            return
        model.get_base_model().save_pretrained(folder, state_dict=merged_state_dict(model), safe_serialization=True)
        model.save_pretrained(Path(folder) / ADAPTER_DIR, safe_serialization=True)


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward instead of storing them (less memory,
    about one more forward per update). Non-reentrant checkpointing, so gradients reach LoRA adapters
    although the frozen embeddings' outputs do not require grad. HF applies it in train mode only,
    i.e. to the update's forward, not to sampling or scoring. (transformers 5 renamed
    ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``; both are accepted.)"""
    if callable(getattr(model, "activation_checkpointing_enable", None)):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
