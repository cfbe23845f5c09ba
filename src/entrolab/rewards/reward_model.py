"""A learned reward model as a reward term: a local HF sequence-classification folder.

The folder is whatever ``AutoModelForSequenceClassification.save_pretrained`` (plus the tokenizer's
``save_pretrained``) wrote. Only safetensors weights are loaded (never pickles) and no remote code
runs. The model scores ``template.format(prompt=..., completion=...)``; with one label the score is
that logit, with several it is the logit of ``label_index``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from entrolab.registry import REWARDS
from entrolab.types import Metrics, RolloutBatch, Task


@REWARDS.register("reward_model", paper="baseline")
class RewardModel:
    """Score completions with a local sequence-classification reward model (scalar logit)."""

    def __init__(self, *, path: str, template: str = "{prompt}{completion}", label_index: int = 0,
                 batch_size: int = 64, max_length: int = 512, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"reward_model: path {str(folder)!r} is not a folder")
        if "{completion}" not in template:
            raise ValueError(f"reward_model: template must contain '{{completion}}', got {template!r}")
        self.path, self.template, self.label_index = str(folder), template, int(label_index)
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        n_labels = int(self.model.config.num_labels)
        if not 0 <= self.label_index < n_labels:
            raise ValueError(f"reward_model: label_index {label_index} out of range for {n_labels} labels")

    @torch.no_grad()
    def score_texts(self, texts: list[str]) -> torch.Tensor:
        """[N] reward-model scores of full texts (right-padded batches; the model finds the last token)."""
        self.tokenizer.padding_side = "right"
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_length).to(self.device)
            logits = self.model(**enc).logits.float()
            out.append(logits[:, self.label_index].cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        texts = [self.template.format(prompt=batch.prompts[int(g)].text, completion=c)
                 for g, c in zip(batch.group_id_B.tolist(), batch.texts)]
        return self.score_texts(texts), {}
