"""ONI's three intrinsic reward models and the math they share (pure functions over tensors).

ONI (Zheng et al., "Online Intrinsic Rewards for Decision Making Agents from Large Language Model
Feedback", arXiv 2410.23022, Sec. 3) distils a judge's annotations of the agent's own turns into an
intrinsic reward ``r_int(x)`` of a turn's text ``x``. The three variants of the paper:

* ``HashingModel`` (ONI-Retrieval): a lookup table ``key(x) → judge label``; unseen text scores
  ``unseen`` (0 in the paper).
* ``ClassifierModel`` (ONI-Classification): ``p(useful | x) = σ(w·φ(x) + b)`` fitted by full-batch
  gradient steps on the cross-entropy of every label seen so far; the reward is ``1[p > threshold]``
  (the paper's, threshold 0.5) or ``p`` itself (``threshold=None``). The paper's character CNN
  becomes a logistic regression over hashed character n-grams ``φ`` (small, CPU, exactly testable).
* ``RankingModel`` (ONI-Ranking, after Motif): a Bradley–Terry score ``R(x) = w·φ(x)`` fitted to the
  judge's preferences ``p = P(a ≻ b)`` between two turns with the soft-label loss
  ``−[p log σ(R(a) − R(b)) + (1 − p) log σ(R(b) − R(a))]``; the reward is ``R(x)`` normalised by its
  running mean and variance and sparsified (``normalize_sparsify``), or ``R(x)`` itself.

Each model has ``score(texts) -> [N]`` (distinct texts), ``rewards(texts) -> [N]`` (a batch's turn texts,
repeats included), ``update(...)`` and ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import hashlib
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, Sequence

import torch
import torch.nn.functional as F


def text_key(text: str) -> str:
    """A stable key of a turn's text (Python's ``hash`` is salted per process; this is not)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def hashed_ngrams(text: str, *, dim: int, n: int) -> torch.Tensor:
    """[D] L2-normalised counts of the character 1..n-grams of ``text`` hashed into ``dim`` buckets.

    The bucket of gram ``g`` of length ``k`` is ``crc32("k|g") mod dim`` (stable across runs and
    machines). Normalising makes long and short turns comparable in the linear models' logits. The
    empty text maps to the zero vector.
    """
    counts: Counter[int] = Counter()
    for k in range(1, n + 1):
        for i in range(len(text) - k + 1):
            counts[zlib.crc32(f"{k}|{text[i:i + k]}".encode("utf-8")) % dim] += 1
    x_D = torch.zeros(dim, dtype=torch.float64)
    for bucket, c in counts.items():
        x_D[bucket] = float(c)
    norm = float(x_D.norm())
    return x_D / norm if norm > 0 else x_D


def featurize(texts: Sequence[str], *, dim: int, n: int) -> torch.Tensor:
    """[N, D] ``hashed_ngrams`` of each text (float64, so updates are reproducible to the last bit)."""
    if not texts:
        return torch.zeros(0, dim, dtype=torch.float64)
    return torch.stack([hashed_ngrams(t, dim=dim, n=n) for t in texts])


def logistic_step(w_D: torch.Tensor, b: torch.Tensor, x_ND: torch.Tensor, y_N: torch.Tensor, *,
                  lr: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One full-batch gradient step on the mean binary cross-entropy of ``σ(x·w + b)`` vs labels ``y``.

    ``∂L/∂w = mean_i (p_i − y_i) x_i``, ``∂L/∂b = mean_i (p_i − y_i)`` with ``p_i = σ(x_i·w + b)``
    (soft labels ``y ∈ [0, 1]`` allowed). Statistics over the N examples given (the whole dataset).

    Returns:
        ``(w_D, b, loss)``: updated weights and bias, and the loss before the step.
    """
    z_N = x_ND @ w_D + b
    p_N = torch.sigmoid(z_N)
    loss = float(F.binary_cross_entropy_with_logits(z_N, y_N))
    g_N = p_N - y_N
    return w_D - lr * (x_ND.T @ g_N) / len(y_N), b - lr * g_N.mean(), loss


def bradley_terry_step(w_D: torch.Tensor, xa_ND: torch.Tensor, xb_ND: torch.Tensor, p_N: torch.Tensor, *,
                       lr: float) -> tuple[torch.Tensor, float]:
    """One full-batch gradient step of the soft-label Bradley–Terry loss of ``R(x) = w·x``.

    ``L = −mean_i [p_i log σ(d_i) + (1 − p_i) log σ(−d_i)]`` with ``d_i = R(a_i) − R(b_i)`` (ONI-Ranking;
    ties are ``p = 0.5``), so ``∂L/∂w = mean_i (σ(d_i) − p_i)(a_i − b_i)``.

    Returns:
        ``(w_D, loss)``: updated weights and the loss before the step.
    """
    diff_ND = xa_ND - xb_ND
    d_N = diff_ND @ w_D
    loss = float(-(p_N * F.logsigmoid(d_N) + (1 - p_N) * F.logsigmoid(-d_N)).mean())
    grad_D = ((torch.sigmoid(d_N) - p_N)[:, None] * diff_ND).mean(0)
    return w_D - lr * grad_D, loss


def count_discounts(keys: Sequence[str], *, exponent: float) -> list[float]:
    """``1 / N_k^β`` for each turn k of one episode, ``N_k`` = occurrences of its key in turns 0..k.

    ONI's episodic count scaling ``r_int / N(x)^β`` (Sec. 3; β = 3 in the released code): the first
    occurrence of a text in an episode keeps its full reward, a repeat gets ``2^−β`` of it, ... The
    count restarts every episode (the spec's pitfall: counts must be episodic, not global).
    """
    seen: Counter[str] = Counter()
    out = []
    for k in keys:
        seen[k] += 1
        out.append(1.0 / seen[k] ** exponent)
    return out


def merge_moments(count: int, mean: float, var: float, x_N: torch.Tensor) -> tuple[int, float, float]:
    """Running (count, mean, population variance) merged with the batch ``x_N`` (Chan et al.'s update).

    ``δ = mean_x − mean``, ``n' = n + m``, ``mean' = mean + δ m/n'``,
    ``var' = (n var + m var_x + δ² n m / n') / n'``: exactly the moments of everything seen so far.
    """
    m = int(x_N.numel())
    if m == 0:
        return count, mean, var
    mean_x, var_x = float(x_N.mean()), float(x_N.var(unbiased=False))
    total = count + m
    delta = mean_x - mean
    return total, mean + delta * m / total, (var * count + var_x * m + delta ** 2 * count * m / total) / total


def normalize_sparsify(x_N: torch.Tensor, *, mean: float, var: float, threshold: float | None,
                       eps: float = 1e-8) -> torch.Tensor:
    """``z = (x − mean)/√(var + eps)``, then ``z · 1[z > threshold]`` (ONI-Ranking's use of R, threshold −0.5
    in the released code: a value on the normalised scale, not a quantile); no threshold keeps z."""
    z_N = (x_N - mean) / (var + eps) ** 0.5
    return z_N if threshold is None else z_N * (z_N > threshold)


def preference_from_labels(label_a: float, label_b: float) -> float:
    """``P(a ≻ b) = (1 + y_a − y_b) / 2`` from two pointwise labels in [0, 1] (1, 0 or a 0.5 tie when binary)."""
    return 0.5 * (1.0 + label_a - label_b)


class _Dataset:
    """Texts (or pairs) with targets and cached features, oldest dropped beyond ``max_examples``."""

    def __init__(self, *, dim: int, n: int, max_examples: int):
        self.dim, self.n, self.max_examples = dim, n, max_examples
        self.items: list[tuple[Any, float]] = []
        self.dropped = 0
        self._x: list[torch.Tensor] = []

    def _features(self, item: Any) -> torch.Tensor:
        if isinstance(item, str):
            return hashed_ngrams(item, dim=self.dim, n=self.n)
        return torch.stack([hashed_ngrams(item[0], dim=self.dim, n=self.n),
                            hashed_ngrams(item[1], dim=self.dim, n=self.n)])

    def add(self, items: Sequence[Any], targets: Sequence[float]) -> None:
        for item, y in zip(items, targets):
            self.items.append((item, float(y)))
            self._x.append(self._features(item))
        over = len(self.items) - self.max_examples
        if over > 0:
            self.items, self._x, self.dropped = self.items[over:], self._x[over:], self.dropped + over

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack(self._x), torch.tensor([y for _, y in self.items], dtype=torch.float64)

    def metrics(self, loss: float) -> dict[str, float]:
        """The update's metrics: ``loss`` (before its first step) and the data set's size."""
        return {"oni/model_loss": loss, "oni/dataset_size": float(len(self.items)),
                "oni/dataset_dropped": float(self.dropped)}

    def state_dict(self) -> dict[str, Any]:
        return {"items": list(self.items), "dropped": self.dropped}  # tuples load with weights_only

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.items, self._x = [], []
        self.add([i for i, _ in state["items"]], [y for _, y in state["items"]])
        self.dropped = int(state["dropped"])


class _Model(ABC):
    """``rewards(texts)``: the model's reward of each turn text (repeats allowed), ``score`` by default."""

    @abstractmethod
    def score(self, texts: Sequence[str]) -> torch.Tensor:
        """[N] float64 value of each (distinct) text."""

    def rewards(self, texts: Sequence[str]) -> torch.Tensor:
        distinct = sorted(set(texts))
        value = dict(zip(distinct, self.score(distinct).tolist()))
        return torch.tensor([value[t] for t in texts], dtype=torch.float64)


class HashingModel(_Model):
    """ONI-Retrieval: ``r(x) = label(key(x))`` for annotated texts, ``unseen`` otherwise."""

    def __init__(self, *, unseen: float = 0.0):
        self.unseen = float(unseen)
        self.table: dict[str, float] = {}

    def score(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.table.get(text_key(t), self.unseen) for t in texts], dtype=torch.float64)

    def update(self, texts: Sequence[str], labels: Sequence[float]) -> dict[str, float]:
        for t, y in zip(texts, labels):
            self.table[text_key(t)] = float(y)
        return {"oni/table_size": float(len(self.table))}

    def state_dict(self) -> dict[str, Any]:
        return {"table": dict(self.table)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.table = {str(k): float(v) for k, v in state["table"].items()}


class ClassifierModel(_Model):
    """ONI-Classification: logistic regression over hashed n-grams, refit on every label so far.

    Each ``update`` adds the new (text, label) examples and takes ``steps`` full-batch
    ``logistic_step``s over the whole dataset (the paper: 32 steps of batch 256 per update).
    """

    def __init__(self, *, dim: int, n: int, lr: float, steps: int, threshold: float | None,
                 max_examples: int):
        self.dim, self.n, self.lr, self.steps, self.threshold = dim, n, lr, steps, threshold
        self.w_D = torch.zeros(dim, dtype=torch.float64)
        self.b = torch.zeros((), dtype=torch.float64)
        self.data = _Dataset(dim=dim, n=n, max_examples=max_examples)

    def prob(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.sigmoid(featurize(texts, dim=self.dim, n=self.n) @ self.w_D + self.b)

    def score(self, texts: Sequence[str]) -> torch.Tensor:
        p_N = self.prob(texts)
        return p_N if self.threshold is None else (p_N > self.threshold).to(torch.float64)

    def update(self, texts: Sequence[str], labels: Sequence[float]) -> dict[str, float]:
        self.data.add(list(texts), labels)
        x_ND, y_N = self.data.tensors()
        losses = []
        for _ in range(self.steps):
            self.w_D, self.b, loss = logistic_step(self.w_D, self.b, x_ND, y_N, lr=self.lr)
            losses.append(loss)
        return self.data.metrics(losses[0])

    def state_dict(self) -> dict[str, Any]:
        return {"w_D": self.w_D.clone(), "b": self.b.clone(), "data": self.data.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_D, self.b = state["w_D"].clone(), state["b"].clone()
        self.data.load_state_dict(state["data"])


class RankingModel(_Model):
    """ONI-Ranking: a Bradley–Terry score ``R(x) = w·φ(x)`` fitted to the judge's pairwise preferences.

    No bias term: Bradley–Terry only sees differences ``R(a) − R(b)``, so a bias is unidentifiable.
    With ``normalize`` the reward of a batch's turns is ``normalize_sparsify(R)`` under the running
    moments of R over every turn scored so far (this batch's included), as in the released code;
    else R itself.
    """

    def __init__(self, *, dim: int, n: int, lr: float, steps: int, max_examples: int, normalize: bool,
                 threshold: float | None):
        self.dim, self.n, self.lr, self.steps = dim, n, lr, steps
        self.normalize, self.threshold = normalize, threshold
        self.w_D = torch.zeros(dim, dtype=torch.float64)
        self.data = _Dataset(dim=dim, n=n, max_examples=max_examples)
        self.moments: tuple[int, float, float] = (0, 0.0, 0.0)

    def score(self, texts: Sequence[str]) -> torch.Tensor:
        return featurize(texts, dim=self.dim, n=self.n) @ self.w_D

    def rewards(self, texts: Sequence[str]) -> torch.Tensor:
        raw_N = super().rewards(texts)
        if not self.normalize:
            return raw_N
        self.moments = merge_moments(*self.moments, raw_N)
        _, mean, var = self.moments
        return normalize_sparsify(raw_N, mean=mean, var=var, threshold=self.threshold)

    def update(self, pairs: Sequence[tuple[str, str]], prefs: Sequence[float]) -> dict[str, float]:
        self.data.add([tuple(p) for p in pairs], prefs)
        x_N2D, p_N = self.data.tensors()
        losses = []
        for _ in range(self.steps):
            self.w_D, loss = bradley_terry_step(self.w_D, x_N2D[:, 0], x_N2D[:, 1], p_N, lr=self.lr)
            losses.append(loss)
        return self.data.metrics(losses[0])

    def state_dict(self) -> dict[str, Any]:
        return {"w_D": self.w_D.clone(), "data": self.data.state_dict(), "moments": list(self.moments)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_D = state["w_D"].clone()
        self.data.load_state_dict(state["data"])
        count, mean, var = state["moments"]
        self.moments = (int(count), float(mean), float(var))
