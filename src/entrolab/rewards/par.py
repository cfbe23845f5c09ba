"""PAR (Preference As Reward) and the reward-shaping baselines it is compared against.

All are shapers over the composed reward ``r`` (for a reward model, its raw score):

* ``par``      ``(1/M) Σ_m σ(k (r − r_ref^m))``, bounded and centred on reference rewards;
* ``centered`` ``r − mean_m r_ref^m``;
* ``lsc``      ``log σ(r − q_0.85)`` with ``q_0.85 = μ_ref + 1.0364 σ_ref`` (normal fit, ddof 0);
* ``meanstd``  ``(r − μ_run)/σ_run``; ``clip`` ``clip(r, μ_run − σ_run, μ_run + σ_run)``;
  ``minmax`` ``(r − min_run)/(max_run − min_run)`` — running statistics over every reward seen so
  far, *including the current batch* (updated before use, so the first batch is never divided by 0).

Reference rewards ``r_ref^m`` (PAR: rewards of M responses of the SFT policy, scored by the same
reward) come from ``prompt.meta[meta_key]`` (``ref_source="meta"``) or, by default, from the first
rollout group seen for each prompt (``ref_source="first_seen"``: early in training that group is
close to SFT samples; a prompt first met late gets later-policy references — a deviation we
accept for the testbed, where prompts recur from step 0). The cache is checkpointed.
Pure functions here never mutate their inputs (upstream shapes rewards in place, in a fixed order).
"""

from __future__ import annotations

import math

import torch

from entrolab.registry import SHAPERS
from entrolab.types import Metrics, RolloutBatch, Task

PAPER = "Reward Shaping to Mitigate Reward Hacking in RLHF"
ARXIV = "2502.18770"
LSC_Z = 1.0364  # Φ^{-1}(0.85): LSC centres on the 85th percentile of a normal fit of the references


# --------------------------------------------------------------------------- pure functions
def par_transform(r_B: torch.Tensor, ref_BM: torch.Tensor, mask_BM: torch.Tensor, *, k: float = 1.0) -> torch.Tensor:
    """PAR (arXiv 2502.18770): ``(1/M) Σ_m σ(k (r − r_ref^m))`` over valid references.

    Args:
        r_B: [B] rewards; ref_BM: [B, M] reference rewards of each sample's prompt (padded);
        mask_BM: [B, M] True = valid reference (every row needs at least one).
        k: sigmoid slope (old upstream code's ``sigmoid_k``; 1 in the paper).
    """
    m = mask_BM.to(r_B.dtype)
    s_BM = torch.sigmoid(k * (r_B[:, None] - ref_BM)) * m
    return s_BM.sum(-1) / m.sum(-1).clamp(min=1)


def ref_mean_std(ref_BM: torch.Tensor, mask_BM: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and population std of the valid reference rewards."""
    m = mask_BM.to(ref_BM.dtype)
    n = m.sum(-1).clamp(min=1)
    mu = (ref_BM * m).sum(-1) / n
    var = (((ref_BM - mu[:, None]) ** 2) * m).sum(-1) / n
    return mu, var.sqrt()


def lsc_transform(r_B: torch.Tensor, ref_BM: torch.Tensor, mask_BM: torch.Tensor) -> torch.Tensor:
    """LSC (Wang et al. 2024, as compared in PAR): ``log σ(r − (μ_ref + 1.0364·σ_ref))``."""
    mu, sd = ref_mean_std(ref_BM, mask_BM)
    return torch.nn.functional.logsigmoid(r_B - (mu + LSC_Z * sd))


class RunningStats:
    """Count, mean, M2 (Welford), min and max of every value seen; checkpointable."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def update(self, values: torch.Tensor) -> None:
        for v in values.double().tolist():
            self.count += 1
            d = v - self.mean
            self.mean += d / self.count
            self.m2 += d * (v - self.mean)
            self.min, self.max = min(self.min, v), max(self.max, v)

    @property
    def std(self) -> float:
        """Population std (ddof 0) of everything seen."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2, "min": self.min, "max": self.max}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        self.min, self.max = float(state["min"]), float(state["max"])


# --------------------------------------------------------------------------- reference rewards
class ReferenceRewards:
    """Per-prompt reference rewards: from ``prompt.meta`` or cached from the first group seen."""

    def __init__(self, *, source: str = "first_seen", meta_key: str = "ref_rewards", max_refs: int = 10):
        if source not in ("first_seen", "meta"):
            raise ValueError(f"ref_source must be 'first_seen' or 'meta', got {source!r}")
        if max_refs < 1:
            raise ValueError(f"max_refs must be >= 1, got {max_refs}")
        self.source, self.meta_key, self.max_refs = source, meta_key, int(max_refs)
        self.cache: dict[str, list[float]] = {}

    def lookup(self, rewards_B: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ref_BM, mask_BM)`` for every sequence of ``batch``."""
        gid = batch.group_id_B.tolist()
        refs: list[list[float]] = []
        for b, g in enumerate(gid):
            prompt = batch.prompts[g]
            if self.source == "meta":
                vals = prompt.meta.get(self.meta_key)
                if not vals:
                    raise ValueError(f"prompt {prompt.id!r} has no reference rewards in meta[{self.meta_key!r}] "
                                     f"(needed by ref_source='meta')")
                refs.append([float(v) for v in vals][: self.max_refs])
                continue
            if prompt.id not in self.cache:
                members = [rewards_B[j].item() for j in range(len(gid)) if gid[j] == g]
                self.cache[prompt.id] = members[: self.max_refs]
            refs.append(self.cache[prompt.id])
        M = max((len(r) for r in refs), default=1)
        ref_BM = torch.zeros(len(refs), M)
        mask_BM = torch.zeros(len(refs), M, dtype=torch.bool)
        for b, r in enumerate(refs):
            ref_BM[b, : len(r)] = torch.tensor(r)
            mask_BM[b, : len(r)] = True
        return ref_BM, mask_BM

    def state_dict(self) -> dict:
        return {"cache": {k: list(v) for k, v in self.cache.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.cache = {k: [float(x) for x in v] for k, v in state["cache"].items()}


class _RefShaper:
    """Base for shapers that centre on reference rewards."""

    def __init__(self, ref_source: str, meta_key: str, max_refs: int):
        self.refs = ReferenceRewards(source=ref_source, meta_key=meta_key, max_refs=max_refs)

    def state_dict(self) -> dict:
        return self.refs.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.refs.load_state_dict(state)


@SHAPERS.register("par", paper=PAPER, arxiv=ARXIV)
class PAR(_RefShaper):
    """Preference As Reward: mean sigmoid of the reward minus each reference reward (bounded in (0, 1)).

    Logs ``par/reward`` (mean shaped reward; drifting to 1 signals saturation or hacking).
    """

    name = "par"

    def __init__(self, *, k: float = 1.0, ref_source: str = "first_seen", meta_key: str = "ref_rewards",
                 max_refs: int = 10):
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        super().__init__(ref_source, meta_key, max_refs)
        self.k = float(k)

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        ref_BM, mask_BM = self.refs.lookup(rewards_B, batch)
        out = par_transform(rewards_B, ref_BM, mask_BM, k=self.k)
        return out, {"par/reward": float(out.mean()) if out.numel() else 0.0}


@SHAPERS.register("centered", paper=PAPER, arxiv=ARXIV)
class Centered(_RefShaper):
    """Reward minus the mean reference reward of its prompt."""

    name = "centered"

    def __init__(self, *, ref_source: str = "first_seen", meta_key: str = "ref_rewards", max_refs: int = 10):
        super().__init__(ref_source, meta_key, max_refs)

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        ref_BM, mask_BM = self.refs.lookup(rewards_B, batch)
        return rewards_B - ref_mean_std(ref_BM, mask_BM)[0], {}


@SHAPERS.register("lsc", paper=PAPER, arxiv=ARXIV)
class LSC(_RefShaper):
    """Log-sigmoid centred on the 85th percentile of a normal fit of the prompt's reference rewards."""

    name = "lsc"

    def __init__(self, *, ref_source: str = "first_seen", meta_key: str = "ref_rewards", max_refs: int = 10):
        super().__init__(ref_source, meta_key, max_refs)

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        ref_BM, mask_BM = self.refs.lookup(rewards_B, batch)
        return lsc_transform(rewards_B, ref_BM, mask_BM), {}


class _RunningShaper:
    """Base for shapers using running statistics of every reward seen (current batch included)."""

    def __init__(self):
        self.stats = RunningStats()

    def state_dict(self) -> dict:
        return self.stats.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stats.load_state_dict(state)


@SHAPERS.register("meanstd", paper=PAPER, arxiv=ARXIV)
class MeanStd(_RunningShaper):
    """``(r − μ_run)/σ_run`` with running mean/std (population) over all rewards seen."""

    name = "meanstd"

    def __init__(self, *, eps: float = 1e-8):
        super().__init__()
        self.eps = float(eps)

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        self.stats.update(rewards_B)
        return (rewards_B - self.stats.mean) / (self.stats.std + self.eps), {}


@SHAPERS.register("clip", paper=PAPER, arxiv=ARXIV)
class Clip(_RunningShaper):
    """``clip(r, μ_run − σ_run, μ_run + σ_run)`` with running statistics over all rewards seen."""

    name = "clip"

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        self.stats.update(rewards_B)
        mu, sd = self.stats.mean, self.stats.std
        return rewards_B.clamp(mu - sd, mu + sd), {}


@SHAPERS.register("minmax", paper=PAPER, arxiv=ARXIV)
class MinMax(_RunningShaper):
    """``(r − min_run)/(max_run − min_run)`` over all rewards seen; 0 while all were equal."""

    name = "minmax"

    def __call__(self, rewards_B: torch.Tensor, batch: RolloutBatch, task: Task) -> tuple[torch.Tensor, Metrics]:
        self.stats.update(rewards_B)
        span = self.stats.max - self.stats.min
        if not span > 0:
            return torch.zeros_like(rewards_B), {}
        return (rewards_B - self.stats.min) / span, {}
