"""The two-agent gathering game of the ``synthesis`` task, and its social metrics.

Deterministic and integer-valued, so every tick can be traced by hand. A shared patch holds
``stock`` apples (at most ``cap``, full at tick 0). Each tick both agents choose at once from their
view (:class:`~entrolab.agents.rules.View`), then

1. a frozen agent's action is ``wait`` whatever its policy says (its policy is not run);
2. gathers resolve, the first mover alternating (agent 0 on even ticks): each takes one apple
   if any is left;
3. a ``punish`` freezes the other agent for the next ``freeze`` ticks (a punished agent keeps
   what it gathered this tick; punishing costs the tick's apple);
4. the patch regrows in proportion to what is left: ``stock += stock // grow``, capped at ``cap``
   (an empty patch stays empty: over-harvesting collapses it).

The regrowth is a deterministic stand-in for the density-dependent respawn of the Commons game
(Perolat et al. 2017, "A multi-agent reinforcement learning model of common-pool resource
appropriation"), the social dilemma behind the policy-synthesis paper's Gathering environment.

**Metrics** (Perolat et al. 2017; a, b = apples of agent 0 and 1): return = a / ticks (one apple
per tick at most, so in [0, 1]); efficiency = (a + b) / (2 ticks); equality = 1 − Gini(a, b) =
1 − |a − b| / (2 (a + b)) (1 when nobody gathered); sustainability = final stock / cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from entrolab.agents.rules import MAX_STEPS, Policy, View, decide, parse_policy

#: Fixed opponents as rule-language templates; ``{g}`` is the prompt's ``grow``. A patch left with
#: at least ``grow`` apples regrows, so ``stock gt {g}`` is "gather only when the patch survives it".
OPPONENTS: dict[str, str | None] = {
    "self": None,                                               # the model's own policy (self-play)
    "greedy": "gather",
    "cautious": "if stock gt {g} then gather;wait",
    "warden": "if last eq gather and stock le {g} then punish;if stock gt {g} then gather;wait",
}


def regrow(stock: int, *, cap: int, grow: int) -> int:
    """One apple regrows per ``grow`` apples left, capped at ``cap``: ``min(cap, s + s // grow)``."""
    return min(cap, stock + stock // grow)


def efficiency(a: int, b: int, *, ticks: int) -> float:
    """(a + b) / (2 ticks): the share of the two agents' one-apple-per-tick maximum they gathered."""
    return (a + b) / (2 * ticks)


def equality(a: int, b: int) -> float:
    """1 − Gini of the two returns: 1 − |a − b| / (2 (a + b)); 1 when both are 0 (Perolat et al. 2017)."""
    total = a + b
    return 1.0 if total == 0 else 1.0 - abs(a - b) / (2 * total)


def sustainability(final_stock: int, *, cap: int) -> float:
    """Final stock over capacity: 1 = the patch ends full, 0 = collapsed."""
    return final_stock / cap


@dataclass(frozen=True)
class GameResult:
    """``scores`` (a, b); ``stocks``: stock at the start of each tick, then the final stock;
    ``actions``: the (agent 0, agent 1) actions actually taken each tick."""

    scores: tuple[int, int]
    stocks: tuple[int, ...]
    actions: tuple[tuple[str, str], ...]

    @property
    def final_stock(self) -> int:
        return self.stocks[-1]


def simulate(policy0: Policy, policy1: Policy, *, cap: int, grow: int, ticks: int, freeze: int = 3,
             max_steps: int = MAX_STEPS) -> GameResult:
    """Play the game (module docstring) for ``ticks`` ticks; RuleError if a policy hits its step limit."""
    stock, scores, frozen = cap, [0, 0], [0, 0]
    last = ["none", "none"]
    stocks, actions = [stock], []
    for t in range(ticks):
        acts = []
        for i, pol in enumerate((policy0, policy1)):
            if frozen[i] > 0:
                frozen[i] -= 1
                acts.append("wait")
            else:
                view = View(stock=stock, me=scores[i], other=scores[1 - i], tick=t, last=last[1 - i])
                acts.append(decide(pol, view, max_steps=max_steps)[0])
        for i in (t % 2, 1 - t % 2):
            if acts[i] == "gather" and stock > 0:
                stock -= 1
                scores[i] += 1
        for i in (0, 1):
            if acts[i] == "punish":
                frozen[1 - i] = freeze
        stock = regrow(stock, cap=cap, grow=grow)
        last = acts
        stocks.append(stock)
        actions.append((acts[0], acts[1]))
    return GameResult((scores[0], scores[1]), tuple(stocks), tuple(actions))


@dataclass(frozen=True)
class Game:
    """One prompt's game: capacity, regrowth divisor, opponent name, and the task-wide settings."""

    cap: int
    grow: int
    opponent: str
    ticks: int = 40
    freeze: int = 3
    max_steps: int = MAX_STEPS

    def opponent_policy(self, policy: Policy) -> Policy:
        template = OPPONENTS[self.opponent]
        return policy if template is None else parse_policy(template.format(g=self.grow))

    def play(self, policy: Policy) -> GameResult:
        """Agent 0 plays ``policy`` against the opponent (itself in self-play)."""
        return simulate(policy, self.opponent_policy(policy), cap=self.cap, grow=self.grow,
                        ticks=self.ticks, freeze=self.freeze, max_steps=self.max_steps)

    def metrics(self, result: GameResult) -> dict[str, float]:
        a, b = result.scores
        return {"return": a / self.ticks, "efficiency": efficiency(a, b, ticks=self.ticks),
                "equality": equality(a, b), "sustainability": sustainability(result.final_stock, cap=self.cap)}
