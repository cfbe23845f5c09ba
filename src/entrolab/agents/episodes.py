"""Multi-turn rollouts: the model and an environment take turns, and the episode becomes one batch row.

Per row, the context starts as the prompt's ids followed by the ids of ``env.reset(prompt)``. Each
turn the model continues the context (up to ``max_new_tokens``, ending at EOS); the turn's text
(EOS excluded) goes to ``env.step``; the observation's ids (no special tokens) are appended and the
next turn starts. The episode ends when the environment says done, after ``max_turns`` model
turns, or once the completion region holds ``max_episode_tokens`` tokens.

The row's completion region is ``[turn 0 ids + EOS][obs 0 ids][turn 1 ids + EOS]…``: the forward
passes attend to all of it (``RolloutBatch.attn_BT``) while ``mask_BT``, the loss mask, is True on
the model's tokens only, so no component ever trains on (or takes the entropy of) text the
environment wrote. Token ids are kept exactly as sampled and encoded, never re-tokenized from text,
so the training forward sees the sampler's sequence.

By default every turn re-runs the prefill of each live row's context (the first turn shares it
across a group): for the testbed's short episodes that costs less than keeping caches alive between
turns. ``episode_cache="keep"`` (``agents.turn_cache``) keeps one KV cache across turns instead. All randomness comes from the caller's generator: the uniforms of each decoded
token and one environment seed per episode.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from entrolab.agents.env import is_episodic
from entrolab.types import Prompt, RolloutBatch, Verdict

#: ``RolloutBatch.stop_reasons`` of an episode: "eos" when the environment ended it, "length" when a
#: budget (turns or tokens) did.
STOPS = ("done", "turn_budget", "token_budget")


@dataclass
class Episode:
    """What happened in one episode, turn by turn (``extras["episodes"][b]``)."""

    actions: list[str] = field(default_factory=list)        # the model's turn texts (EOS excluded)
    observations: list[str] = field(default_factory=list)   # what the environment answered to each
    rewards: list[float] = field(default_factory=list)      # each turn's reward
    infos: list[dict[str, Any]] = field(default_factory=list)
    outcome: Verdict | None = None
    stop: str = "done"                                      # one of STOPS
    first_observation: str = ""                             # env.reset's text, part of the prompt region

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))


def chunk_generator(model, engine: str):
    """The chunk generator (``sampler._generate_chunk``'s contract) of ``rollout.engine`` for turns:
    ``builtin`` = the builtin loop on CPU and the static decoder on CUDA when it supports the model
    (``sampler._dispatch_chunk``), ``static`` = the static decoder (or the builtin loop, warned, when
    it does not support the model)."""
    from entrolab.rollout import sampler

    if engine == "builtin":
        return sampler._dispatch_chunk(model)
    if engine == "static":
        from entrolab.rollout.static_decoder import chunk_for

        return chunk_for(model)
    raise ValueError(f"rollout.engine {engine!r} has no multi-turn mode; episodic tasks use 'builtin' or 'static'")


def _generate_turn(model, contexts: list[list[int]], *, pad_id: int, eos_id: int, max_new_tokens: int,
                   temperature: float, top_p: float, greedy: bool, generator, batch_size: int | None,
                   engine: str = "builtin"):
    """One model turn for every context: ``(tokens_nT, logp_nT, entropy_nT, length_n, eos_n)``.

    Identical contexts (a group's first turn) are prefilled once.
    """
    _generate_chunk = chunk_generator(model, engine)

    n = len(contexts)
    chunk = n if batch_size is None else batch_size
    parts = []
    for start in range(0, n, chunk):
        rows = contexts[start:start + chunk]
        index: dict[tuple[int, ...], int] = {}
        row_to_uniq = torch.tensor([index.setdefault(tuple(c), len(index)) for c in rows], dtype=torch.long)
        uniq = [list(c) for c in index]
        parts.append(_generate_chunk(model, uniq, row_to_uniq, pad_id=pad_id, eos_id=eos_id,
                                     max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     greedy=greedy, generator=generator))
    width = max(p[0].shape[1] for p in parts)

    def cat(i, fill):
        return torch.cat([torch.nn.functional.pad(p[i], (0, width - p[i].shape[1]), value=fill) for p in parts])

    return cat(0, pad_id), cat(1, 0.0), cat(2, 0.0), torch.cat([p[3] for p in parts]), torch.cat([p[4] for p in parts])


def _env_seeds(generator: torch.Generator | None, n: int) -> list[int]:
    """One seed per episode from the caller's generator (fixed seeds under greedy decoding)."""
    if generator is None:
        return list(range(n))
    return torch.randint(0, 2**31 - 1, (n,), generator=generator, device=generator.device).tolist()


def sample_episodes(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    task,
    group_size: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int,
    generator: torch.Generator | None,
    batch_size: int | None = None,
    greedy: bool = False,
    prompt_texts: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_turns: int | None = None,
    max_episode_tokens: int | None = None,
    episode_cache: str = "reprefill",
    chat_template: bool = False,
    engine: str = "builtin",
) -> RolloutBatch:
    """Play ``group_size`` episodes of ``task``'s environment per prompt; one batch row per episode.

    Takes ``rollout.sampler.sample``'s arguments (``max_new_tokens`` caps each turn) plus the
    episodic ``task`` and the budgets (``max_turns`` None = ``task.max_turns``). Returns a
    ``RolloutBatch`` whose rows follow the module docstring's layout, with verdicts set (the
    environment's outcome, ``reward`` = the episode return) and the per-episode extras:
    ``turn_id_BT`` (turn index on model tokens, −1 elsewhere), ``turn_reward_BT`` (each turn's reward on
    its last token), ``episode_return_B``, ``turns_B``, ``tool_calls_B``, ``malformed_B``,
    ``success_B`` and ``episodes`` (the ``Episode`` records).

    ``engine``: the turn generator (``chunk_generator``; on CUDA both use the static decoder).
    ``episode_cache``: ``"reprefill"`` re-prefills each live context every turn (finished episodes
    leave the batch; ``batch_size`` chunks each turn); ``"keep"`` keeps one KV cache for the whole
    batch across turns and feeds only new tokens (``agents.turn_cache``; ``batch_size`` is ignored).
    Both give the model the same context.

    ``chat_template`` (``model.chat_template``): each observation is wrapped as a user message of the
    tokenizer's chat template before it is encoded (``agents.chat.observation_format``; the prompt
    itself is formatted by the caller); ``Episode.observations`` keep the raw text.
    """
    from entrolab.rollout.sampler import check_and_encode, left_pad

    if not is_episodic(task):
        raise ValueError(f"task '{getattr(task, 'name', task)}' is not episodic (it has no make_env)")
    turns_cap = int(max_turns or getattr(task, "max_turns", 0) or 0)
    if turns_cap < 1:
        raise ValueError("multi-turn rollouts need rollout.max_turns >= 1 (or a task with max_turns)")
    P, G = len(prompts), group_size
    texts, prompt_ids = check_and_encode(tokenizer, prompts, group_size=G, max_new_tokens=max_new_tokens,
                                         batch_size=batch_size, greedy=greedy, generator=generator,
                                         prompt_texts=prompt_texts)
    pad_id, eos_id = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)
    B = P * G
    if chat_template:
        from entrolab.agents.chat import observation_format
        wrap = observation_format(tokenizer)
    else:
        def wrap(obs: str) -> str:
            return obs

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    envs, episodes, prompt_part = [], [], []
    for b, seed in enumerate(_env_seeds(generator, B)):
        prompt = prompts[b // G]
        env = task.make_env(prompt, seed=int(seed))
        first = _call_env(env.reset, prompt, task=task, b=b, where="reset")
        envs.append(env)
        episodes.append(Episode(first_observation=first))
        prompt_part.append(prompt_ids[b // G] + encode(first))
    comp: list[list[int]] = [[] for _ in range(B)]
    model_tok: list[list[bool]] = [[] for _ in range(B)]
    turn_of: list[list[int]] = [[] for _ in range(B)]
    logp: list[list[float]] = [[] for _ in range(B)]
    ent: list[list[float]] = [[] for _ in range(B)]
    turn_last: list[list[int]] = [[] for _ in range(B)]   # completion index of each turn's last token
    if episode_cache not in ("reprefill", "keep"):
        raise ValueError(f"episode_cache must be 'reprefill' or 'keep', got {episode_cache!r}")
    turn_cache = pending = None
    if episode_cache == "keep":
        from entrolab.agents.turn_cache import TurnCache

        turn_cache = TurnCache(model, B, pad_id=pad_id, capacity=max(len(p) for p in prompt_part) + turns_cap * (
            max_new_tokens + 64))
        pending = {b: list(prompt_part[b]) for b in range(B)}
    live = list(range(B))
    was_training = model.training
    model.eval()
    try:
        for k in range(turns_cap):
            if not live:
                break
            kw = dict(eos_id=eos_id, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                      greedy=greedy, generator=generator)
            if turn_cache is not None:
                toks, lps, ents, lens, _ = turn_cache.generate(live, pending, **kw)
            else:
                toks, lps, ents, lens, _ = _generate_turn(model, [prompt_part[b] + comp[b] for b in live],
                                                          pad_id=pad_id, batch_size=batch_size, engine=engine, **kw)
            still = []
            for i, b in enumerate(live):
                n = int(lens[i])
                ids = toks[i, :n].tolist()
                comp[b] += ids
                model_tok[b] += [True] * n
                turn_of[b] += [k] * n
                logp[b] += lps[i, :n].tolist()
                ent[b] += ents[i, :n].tolist()
                turn_last[b].append(len(comp[b]) - 1)
                text = tokenizer.decode([t for t in ids if t != eos_id], skip_special_tokens=True,
                                        clean_up_tokenization_spaces=False)
                result = _call_env(envs[b].step, text, task=task, b=b, where=f"step (turn {k})")
                ep = episodes[b]
                ep.actions.append(text)
                ep.observations.append(result.observation)
                ep.rewards.append(float(result.reward))
                ep.infos.append(dict(result.info))
                if result.done:
                    ep.stop = "done"
                elif k == turns_cap - 1:
                    ep.stop = "turn_budget"
                else:
                    obs = encode(wrap(result.observation))
                    if pending is not None:  # the turn's last token was drawn but never fed
                        pending[b] = ids[-1:] + obs
                    comp[b] += obs
                    model_tok[b] += [False] * len(obs)
                    turn_of[b] += [-1] * len(obs)
                    logp[b] += [0.0] * len(obs)
                    ent[b] += [0.0] * len(obs)
                    if max_episode_tokens is not None and len(comp[b]) >= max_episode_tokens:
                        ep.stop = "token_budget"
                    else:
                        still.append(b)
            live = still
            if progress is not None:
                progress(B - len(live), B)
    finally:
        model.train(was_training)

    for b, ep in enumerate(episodes):
        v = _call_env(envs[b].outcome, None, task=task, b=b, where="outcome")
        ep.outcome = Verdict(reward=ep.ret, correct=bool(v.correct), answer=v.answer, reason=v.reason)

    T = max(1, max(len(c) for c in comp))

    def rows(values, fill, dtype):
        out = torch.full((B, T), fill, dtype=dtype)
        for b, v in enumerate(values):
            if v:
                out[b, :len(v)] = torch.tensor(v, dtype=dtype)
        return out

    completion_ids_BT = rows(comp, pad_id, torch.long)
    mask_BT = rows(model_tok, False, torch.bool)
    attn_BT = rows([[True] * len(c) for c in comp], False, torch.bool)
    turn_reward_BT = torch.zeros(B, T)
    for b, ep in enumerate(episodes):
        for idx, r in zip(turn_last[b], ep.rewards):
            turn_reward_BT[b, idx] = r
    prompt_ids_BL, mask_prompt_BL = left_pad(prompt_part, pad_id)
    infos = [ep.infos for ep in episodes]
    return RolloutBatch(
        prompts=list(prompts),
        group_id_B=torch.arange(B) // G,
        prompt_ids_BL=prompt_ids_BL,
        mask_prompt_BL=mask_prompt_BL,
        completion_ids_BT=completion_ids_BT,
        mask_BT=mask_BT,
        attn_BT=attn_BT,
        texts=tokenizer.batch_decode([c for c in comp], skip_special_tokens=True, clean_up_tokenization_spaces=False),
        stop_reasons=["eos" if ep.stop == "done" else "length" for ep in episodes],
        temperature=float(temperature),
        old_logp_BT=rows(logp, 0.0, torch.float32),
        entropy_BT=rows(ent, 0.0, torch.float32),
        verdicts=[ep.outcome for ep in episodes],
        extras={
            "prompt_texts": texts,
            "episodes": episodes,
            "turn_id_BT": rows(turn_of, -1, torch.long),
            "turn_reward_BT": turn_reward_BT,
            "episode_return_B": torch.tensor([ep.ret for ep in episodes], dtype=torch.float32),
            "turns_B": torch.tensor([len(ep.actions) for ep in episodes], dtype=torch.long),
            "tool_calls_B": torch.tensor([sum(bool(i.get("tool_call")) for i in inf) for inf in infos]),
            "malformed_B": torch.tensor([sum(bool(i.get("malformed")) for i in inf) for inf in infos]),
            "success_B": torch.tensor([bool(ep.outcome.correct) for ep in episodes], dtype=torch.bool),
        },
    )


class EnvironmentFailure(RuntimeError):
    """An environment raised (a bug in the environment: model text must never make it raise)."""


def _call_env(fn, arg, *, task, b: int, where: str):
    try:
        return fn() if arg is None and where == "outcome" else fn(arg)
    except Exception as err:
        raise EnvironmentFailure(f"environment of task '{getattr(task, 'name', task)}' raised in {where} of "
                                f"episode {b}: {type(err).__name__}: {err}") from err


def sampler_for(task, *, engine: str = "builtin", max_turns: int | None = None,
                max_episode_tokens: int | None = None, episode_cache: str = "reprefill",
                chat_template: bool = False) -> Callable[..., RolloutBatch]:
    """The sampler function for ``task``: ``sample_episodes`` bound to it for an episodic task,
    otherwise the single-turn engine ``engine`` (``rollout.sampler.get_engine``; ``chat_template``
    concerns observations only, the caller formats prompts)."""
    from entrolab.rollout.sampler import get_engine

    if not is_episodic(task):
        return get_engine(engine)
    if engine not in ("builtin", "static"):
        raise ValueError(f"rollout.engine {engine!r} has no multi-turn mode; episodic tasks use 'builtin' or 'static'")
    return functools.partial(sample_episodes, task=task, max_turns=max_turns, max_episode_tokens=max_episode_tokens,
                             episode_cache=episode_cache, chat_template=chat_template, engine=engine)
