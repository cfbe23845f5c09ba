"""The routing testbed's accuracy/cost frontier under fixed routing policies, and which one the
Router-R1 reward prefers at each cost weight α (pure Python, no model; seconds).

Each policy sends easy hops to one model and hard hops to another, plays every prompt of a split
through the real environment (``episode seeds 0..seeds-1``), and reports accuracy, mean total cost
and the mean ``router_r1`` reward for each α. The best policy per α is the frontier an RL run with
that cost weight should approach (docs/agents/routing.md).

    PYTHONPATH=src python benchmarks/routing_frontier.py [--cost-scale 16] [--cost-if-wrong] [--alphas 0 0.5 1]
"""

from __future__ import annotations

import argparse
import itertools

import torch

import entrolab.agents.envs  # noqa: F401  (registers the routing task)
from entrolab.agents.envs.routing import is_hard
from entrolab.agents.toolcall import format_action
from entrolab.registry import TASKS
from entrolab.rewards.router_r1 import router_r1_reward


def play_policy(task, prompts, easy: str, hard: str, *, seeds: int) -> tuple[list[bool], list[float]]:
    """Right/wrong and total cost of every (prompt, seed) episode under the policy (easy, hard)."""
    correct, cost = [], []
    for p, seed in itertools.product(prompts, range(seeds)):
        env = task.make_env(p, seed=seed)
        env.reset(p)
        x, total = p.meta["start"], 0.0
        for op, b in p.meta["hops"]:
            s = env.step(format_action(hard if is_hard(x, op, b) else easy, f"{x}{op}{b}"))
            x, total = int(s.observation[1:]), total + s.info["cost"]
        env.step(format_action("answer", str(x)))
        correct.append(env.outcome().correct)
        cost.append(total)
    return correct, cost


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--seeds", type=int, default=4, help="episode seeds per prompt")
    ap.add_argument("--cost-scale", type=float, default=None, help="router_r1 cost_scale (default: the task's)")
    ap.add_argument("--cost-if-wrong", action="store_true")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="routing task options (ints/floats)")
    args = ap.parse_args(argv)
    params = {k: float(v) if "." in v else int(v) for k, v in (s.split("=", 1) for s in args.set)}
    task = TASKS.build("routing", params)
    scale = args.cost_scale or task.max_episode_cost
    prompts = task.prompts(args.split)
    names = [m.name for m in task.pool]
    rows = []
    for easy, hard in [(names[0], h) for h in names] + [(n, n) for n in names[1:]]:
        correct, cost = play_policy(task, prompts, easy, hard, seeds=args.seeds)
        c_B, k_B = torch.tensor(cost), torch.tensor(correct)
        rewards = [float(router_r1_reward(torch.ones_like(k_B), k_B, c_B, cost_weight=a, cost_scale=scale,
                                          cost_if_wrong=args.cost_if_wrong).mean()) for a in args.alphas]
        rows.append((f"easy→{easy}, hard→{hard}", float(k_B.float().mean()), float(c_B.mean()), rewards))
    print(f"routing {args.split} split, {len(prompts)} prompts × {args.seeds} seeds, cost_scale {scale:g}, "
          f"cost_if_wrong {args.cost_if_wrong}")
    print("| policy | accuracy | mean cost | " + " | ".join(f"r(α={a:g})" for a in args.alphas) + " |")
    print("|---|---|---|" + "---|" * len(args.alphas))
    best = [max(range(len(rows)), key=lambda i: rows[i][3][j]) for j in range(len(args.alphas))]
    for i, (name, acc, cost, rewards) in enumerate(rows):
        cells = [f"**{r:.3f}**" if best[j] == i else f"{r:.3f}" for j, r in enumerate(rewards)]
        print(f"| {name} | {acc:.3f} | {cost:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
