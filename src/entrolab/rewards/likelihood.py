"""Likelihood-based rewards: (mean) log-prob / probability of the reference answer after the CoT, and JEPO.

Kwiatkowski et al., "Likelihood-Based Reward Designs for General LLM Reasoning" (arXiv 2602.03979).
The CoT ``z`` is the completion truncated at the task's answer marker; the reference answer ``a*``
is teacher-forced after ``prompt + z + marker`` in one pass (no answer is sampled). ``prompt`` is the
exact text the sampler encoded (``batch.extras["prompt_texts"]``, e.g. chat-templated), so the answer
is scored in the context the CoT was sampled in:

* ``logprob``       R = log π(a*|p, z)                         (the paper's recommendation)
* ``mean_logprob``  R = (1/|a*|) log π(a*|p, z)
* ``prob``          R = π(a*|p, z)                             (VeriFree)
* ``mean_prob``     R = (1/|a*|) Σ_t π(a*_t|p, z, a*_<t)         (RLPR-style)
* ``jepo``          R_i = log mean_{j∈g} π(a*|z_j) − log mean_{j∈g, j≠i} π(a*|z_j)  (already a
  leave-one-out advantage: pair it with the ``raw`` advantage estimator, not with RLOO/GRPO).

The reward needs a forward pass of the *current policy*, so it is given a scorer callable
``scorer(prefixes, continuations) -> list of [n_tokens] log-prob tensors`` through ``set_scorer``
(``make_logprob_scorer(model, tokenizer)`` builds one). The reward value is a number, so the
REINFORCE weight ``(R − c)`` is detached, as in the paper's Lemma 1. The second Lemma-1 term,
``∇R_θ(z)``, is an SFT-like loss on a* that the policy update must add explicitly:
``likelihood_sft_loss`` computes it from the pairs this reward stores in
``batch.extras["likelihood/pairs"]`` and the token weights in ``batch.extras["likelihood/weights"]``.

Lemma 1 weighs the two terms 1:1 per sample. The REINFORCE term reaches the optimizer through the
recipe's loss aggregation, which gives row i's tokens a weight c_i (1/num_tokens under
``token_mean``, 1/(num_seqs·|o_i|) under ``seq_mean_token_mean``, …); the SFT term of row i is
weighted by the same c_i (``policy_row_weights``; the aggregation is bound by ``bind_aggregation``),
so the ratio is 1:1 whatever the aggregation. The paper reinforces the CoT only: the reward writes
``batch.extras["reinforce_mask_BT"]`` (True on the CoT tokens before the marker; every token when the
marker is absent), and the trainer zeroes the advantages of the other tokens (the marker, the sampled
answer, EOS) before the update (``Components.prepare_batch``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from entrolab.models.scoring import Scorer, continuation_logps, make_logprob_scorer  # noqa: F401
from entrolab.registry import REWARDS
from entrolab.types import REINFORCE_MASK_KEY, Metrics, RolloutBatch, Task

FORMS = ("logprob", "mean_logprob", "prob", "mean_prob", "jepo")


# --------------------------------------------------------------------------- the forward pass
# --------------------------------------------------------------------------- pure reward math
def likelihood_values(tok_logps: Sequence[torch.Tensor], group_id_B: torch.Tensor, *, form: str = "logprob"
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Reward per sample and the detached SFT-term token weights ``w`` (∇R = Σ_t w_t ∇log p_t).

    Args:
        tok_logps: B tensors [n_i] of per-token log-probs of the reference answer.
        group_id_B: [B] groups (JEPO only).
        form: one of ``logprob, mean_logprob, prob, mean_prob, jepo``.

    Returns:
        ``(values_B, weights)``; for JEPO the weights are ``G·softmax_g(L)`` so that averaging the
        SFT term over samples averages ∇R_g over groups.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    seq_B = torch.stack([t.sum() for t in tok_logps]) if tok_logps else torch.zeros(0)
    n_B = torch.tensor([max(1, t.numel()) for t in tok_logps], dtype=torch.float32)
    if form == "logprob":
        return seq_B, [torch.ones_like(t) for t in tok_logps]
    if form == "mean_logprob":
        return seq_B / n_B, [torch.full_like(t, 1.0 / max(1, t.numel())) for t in tok_logps]
    if form == "prob":
        p_B = seq_B.exp()
        return p_B, [torch.full_like(t, float(p)) for t, p in zip(tok_logps, p_B)]
    if form == "mean_prob":
        vals = torch.stack([t.exp().mean() if t.numel() else torch.tensor(0.0) for t in tok_logps])
        return vals, [t.exp() / max(1, t.numel()) for t in tok_logps]
    # JEPO: leave-one-out difference of the group's log-mean-exp.
    vals, weights = torch.zeros_like(seq_B), [torch.zeros_like(t) for t in tok_logps]
    for g in group_id_B.unique().tolist():
        rows = (group_id_B == g).nonzero().squeeze(-1).tolist()
        L = seq_B[rows]
        G = len(rows)
        soft = torch.softmax(L, 0)
        for k, b in enumerate(rows):
            weights[b] = torch.full_like(tok_logps[b], float(G * soft[k]))
            if G > 1:
                full = torch.logsumexp(L, 0) - math.log(G)
                others = torch.logsumexp(torch.cat([L[:k], L[k + 1:]]), 0) - math.log(G - 1)
                vals[b] = full - others
    return vals, weights


def likelihood_sft_loss(tok_logps: Sequence[torch.Tensor], weights: Sequence[torch.Tensor],
                        row_weights_B: torch.Tensor | None = None) -> torch.Tensor:
    """The explicit ∇R_θ term of Lemma 1 as a loss: ``−Σ_i c_i Σ_t w_{i,t} log p_{i,t}``.

    ``tok_logps`` must carry gradient (``continuation_logps`` under grad); ``weights`` are detached.
    ``row_weights_B`` are the c_i (default 1/B: the per-sample mean of Lemma 1); the policy update
    passes the policy loss's own row weights (``policy_row_weights``) so the two terms stay 1:1.
    For ``logprob`` this is exactly SFT on the reference answer given (prompt, CoT).
    """
    if not tok_logps:
        return torch.zeros(())
    if row_weights_B is None:
        row_weights_B = torch.full((len(tok_logps),), 1.0 / len(tok_logps), dtype=torch.float64)
    if row_weights_B.shape != (len(tok_logps),):
        raise ValueError(f"row_weights_B has shape {tuple(row_weights_B.shape)} for {len(tok_logps)} samples")
    return -sum(float(c) * (w.detach().to(t.device) * t).sum()
                for t, w, c in zip(tok_logps, weights, row_weights_B.tolist()))


def policy_row_weights(aggregation, mask_BT: torch.Tensor, *, num_tokens: float, num_seqs: float) -> torch.Tensor:
    """c_B: the weight ``aggregation`` gives each valid token of row i (mean over the row's tokens).

    The policy loss of a sequence-level advantage A_i is ``agg(−A_i·log π)``, whose gradient is
    ``Σ_i c_i·A_i·∇log π(z_i)``: c_i is the row's weight in the REINFORCE term, found by
    differentiating the aggregation of a zero loss (exact for any loss-linear aggregation). Hand
    values: ``token_mean`` 1/num_tokens, ``seq_mean_token_mean`` 1/(num_seqs·|o_i|),
    ``seq_mean_token_sum`` 1/num_seqs, ``constant_norm`` 1/(num_seqs·C). An empty row has no
    policy-loss weight and gets 0 (the sampler never produces one: EOS or a first token is always there).
    """
    mask = mask_BT.detach().bool().cpu()
    x_BT = torch.zeros(mask.shape, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        (g_BT,) = torch.autograd.grad(aggregation(x_BT, mask, num_tokens=num_tokens, num_seqs=num_seqs), x_BT,
                                      allow_unused=True)
    if g_BT is None:
        return torch.zeros(mask.shape[0], dtype=torch.float64)
    return (g_BT * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def cot_mask(batch: RolloutBatch, marker: str | None) -> torch.Tensor:
    """[B, T] True on the tokens Lemma 1 reinforces: the CoT before the first ``marker``.

    When the text has no marker, the whole completion is the CoT (every valid token, EOS included);
    otherwise the marker, the sampled answer after it and EOS are excluded (``segments.phase_ranges``).
    """
    from entrolab.rewards.segments import phase_ranges

    out = batch.mask_BT.detach().bool().cpu().clone()
    for i in range(batch.batch_size):
        ph = phase_ranges(batch, i, marker) if marker else None
        if ph is not None and ph.found:
            out[i, ph.think.stop:] = False
    return out


# --------------------------------------------------------------------------- the registered reward
@REWARDS.register("likelihood", paper="Likelihood-Based Reward Designs for General LLM Reasoning", arxiv="2602.03979")
class LikelihoodReward:
    """Log-likelihood (or probability) of the reference answer after the sampled CoT, under the policy.

    Reference answers come from ``prompt.meta[answer_key]`` or else the first of
    ``task.solutions(prompt)``. Needs a scorer (``set_scorer``) or ``batch.extras["logprob_scorer"]``.
    The explicit SFT-like gradient term (Lemma 1) is added by the policy update through
    ``auxiliary_loss`` (weight ``sft_coef``), weighted per row like the policy loss. Only the CoT is
    reinforced (``extras["reinforce_mask_BT"]``) unless ``reinforce_answer`` is true. Logs ``likelihood/mean_answer_logp`` (mean sequence
    log-prob of a*) and ``likelihood/sft_loss``.
    """

    def __init__(self, *, form: str = "logprob", answer_key: str = "answer", sft_coef: float = 1.0,
                 reinforce_answer: bool = False):
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if not sft_coef >= 0:
            raise ValueError(f"sft_coef must be >= 0, got {sft_coef}")
        self.form, self.answer_key, self.sft_coef = form, answer_key, float(sft_coef)
        # JEPO's value is a leave-one-out difference within the group: 0 for a group of one.
        self.min_group_size = 2 if form == "jepo" else 1
        self.reinforce_answer = bool(reinforce_answer)
        self.scorer: Scorer | None = None
        self.model = self.tokenizer = None
        self.aggregation = None

    def bind_aggregation(self, aggregation) -> None:
        """Bind the recipe's policy-loss aggregation (called by ``build_components``), so the SFT term
        is weighted per row exactly like the REINFORCE term (Lemma 1, 1:1)."""
        self.aggregation = aggregation

    def bind_policy(self, model, tokenizer) -> None:
        """Bind the live policy (called by the trainer) for the explicit SFT-like term."""
        self.model, self.tokenizer = model, tokenizer

    def auxiliary_loss(self, batch: RolloutBatch, idx_M: torch.Tensor) -> tuple[torch.Tensor | None, Metrics]:
        """Lemma 1's second term for the mini-batch rows ``idx_M``: ``sft_coef · likelihood_sft_loss``.

        Row i is weighted by c_i, the weight the bound aggregation gives row i's policy-loss tokens in
        this mini-batch (same counts as the policy update: its valid tokens and rows), so the SFT and
        REINFORCE terms are 1:1 per sample whatever the aggregation; without a bound aggregation c_i =
        1/M (the per-sample mean). ``sft_coef = 0`` drops it (reward-only REINFORCE, the ablation).
        """
        pairs, weights = batch.extras.get("likelihood/pairs"), batch.extras.get("likelihood/weights")
        if self.sft_coef == 0 or pairs is None or self.model is None:
            return None, {}
        rows = idx_M.tolist()
        prefixes, answers = zip(*[pairs[i] for i in rows])
        tok_logps = continuation_logps(self.model, self.tokenizer, prefixes, answers, temperature=batch.temperature)
        c_M = None
        if self.aggregation is not None:
            mask_M = batch.mask_BT[idx_M.to(batch.mask_BT.device)]
            c_M = policy_row_weights(self.aggregation, mask_M, num_tokens=float(mask_M.sum()), num_seqs=float(len(rows)))
        loss = self.sft_coef * likelihood_sft_loss(tok_logps, [weights[i] for i in rows], c_M)
        return loss, {"likelihood/sft_loss": float(loss.detach())}

    def set_scorer(self, scorer: Scorer) -> None:
        """Bind the function that scores continuations under the current policy (called by the trainer)."""
        self.scorer = scorer

    def reference(self, prompt, task) -> str:
        ans = prompt.meta.get(self.answer_key)
        if ans is None and task is not None:
            sols = task.solutions(prompt)
            ans = sols[0] if sols else None
        if isinstance(ans, (list, tuple)):
            ans = ans[0] if ans else None
        if not isinstance(ans, str) or not ans:
            raise ValueError(f"likelihood: no reference answer for prompt {prompt.id!r} "
                             f"(meta[{self.answer_key!r}] missing and the task has no solutions)")
        return ans

    def __call__(self, batch: RolloutBatch, task: Task | None) -> tuple[torch.Tensor, Metrics]:
        scorer = self.scorer or batch.extras.get("logprob_scorer")
        if scorer is None:
            raise ValueError("likelihood: no scorer; the trainer must call set_scorer(make_logprob_scorer(model, "
                             "tokenizer)) or put one in batch.extras['logprob_scorer']")
        marker = getattr(task, "answer_marker", None) or ""
        # The context the CoT was sampled in: the sampler's encoded prompt texts (chat template
        # applied when the recipe asks for it); a hand-built batch without them uses prompt.text.
        prompt_texts = batch.extras.get("prompt_texts")
        if prompt_texts is not None and len(prompt_texts) != len(batch.prompts):
            raise ValueError(f"likelihood: batch.extras['prompt_texts'] has {len(prompt_texts)} entries for "
                             f"{len(batch.prompts)} prompts")
        prefixes, answers = [], []
        for g, text in zip(batch.group_id_B.tolist(), batch.texts):
            prompt = batch.prompts[g]
            cot = text.split(marker, 1)[0] if marker else text  # truncate the CoT at the marker
            prefixes.append((prompt.text if prompt_texts is None else prompt_texts[g]) + cot + marker)
            answers.append(self.reference(prompt, task))
        tok_logps = [t.detach().float().cpu() for t in scorer(prefixes, answers)]
        if len(tok_logps) != batch.batch_size:
            raise ValueError(f"likelihood: scorer returned {len(tok_logps)} results for {batch.batch_size} samples")
        values_B, weights = likelihood_values(tok_logps, batch.group_id_B.cpu(), form=self.form)
        batch.extras["likelihood/pairs"] = list(zip(prefixes, answers))
        batch.extras["likelihood/weights"] = weights
        if not self.reinforce_answer:  # Lemma 1 reinforces the CoT z only, not the sampled answer
            batch.extras[REINFORCE_MASK_KEY] = cot_mask(batch, marker or None)
        seq = [float(t.sum()) for t in tok_logps]
        return values_B, {"likelihood/mean_answer_logp": sum(seq) / max(1, len(seq))}
