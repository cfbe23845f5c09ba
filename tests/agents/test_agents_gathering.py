"""The gathering game and its metrics, by hand: regrowth, hand-traced ticks, freezing, views, self-play."""

import pytest

from entrolab.agents.gathering import OPPONENTS, Game, efficiency, equality, regrow, simulate, sustainability
from entrolab.agents.rules import RuleError, parse_policy

GREEDY = parse_policy("gather")


def test_regrow_proportional_capped_and_collapsed():
    assert regrow(9, cap=20, grow=4) == 11          # 9 + 9//4
    assert regrow(3, cap=20, grow=4) == 3           # fewer than grow apples: no regrowth
    assert regrow(0, cap=20, grow=4) == 0           # collapsed stays collapsed
    assert regrow(19, cap=20, grow=4) == 20         # 19 + 4 capped at 20
    assert regrow(8, cap=10, grow=2) == 10


def test_metrics_hand_values():
    assert efficiency(3, 4, ticks=4) == 7 / 8
    assert efficiency(0, 0, ticks=5) == 0.0
    assert equality(3, 4) == 1 - 1 / 14             # 1 - |3-4| / (2*7)
    assert equality(5, 0) == 0.5                    # the two-agent Gini's maximum is 1/2
    assert equality(0, 0) == 1.0
    assert equality(2, 2) == 1.0
    assert sustainability(3, cap=12) == 0.25
    assert sustainability(0, cap=5) == 0.0


def test_simulate_greedy_pair_hand_traced():
    """cap 5, grow 2, 4 ticks, both gather every tick:

    t0 stock 5, agent 0 first: 5 -> 3, scores 1 1, regrow 3 + 1 = 4
    t1 stock 4, agent 1 first: 4 -> 2, scores 2 2, regrow 2 + 1 = 3
    t2 stock 3:                3 -> 1, scores 3 3, regrow 1 + 0 = 1
    t3 stock 1, agent 1 first takes the last apple: scores 3 4, stock 0 (collapsed)
    """
    r = simulate(GREEDY, GREEDY, cap=5, grow=2, ticks=4)
    assert r.scores == (3, 4)
    assert r.stocks == (5, 4, 3, 1, 0)
    assert r.final_stock == 0
    assert r.actions == (("gather", "gather"),) * 4


def test_simulate_punish_freezes_hand_traced():
    """Agent 0 punishes at tick 0 then gathers; agent 1 always gathers; cap 5, grow 2, freeze 2.

    t0 punish/gather: agent 1 takes 1 (5 -> 4) and is frozen for t1, t2; regrow 4 + 2 -> cap 5
    t1 gather/(frozen) wait: 5 -> 4, a = 1; regrow -> 5
    t2 gather/(frozen) wait: a = 2; stock 5
    t3 both, agent 1 first: 5 -> 3, a = 3, b = 2; regrow 3 + 1 = 4
    t4 both, agent 0 first: 4 -> 2, a = 4, b = 3; regrow 2 + 1 = 3
    """
    p0 = parse_policy("if tick eq 0 then punish;gather")
    r = simulate(p0, GREEDY, cap=5, grow=2, ticks=5, freeze=2)
    assert r.scores == (4, 3)
    assert r.stocks == (5, 5, 5, 5, 4, 3)
    assert r.actions == (("punish", "gather"), ("gather", "wait"), ("gather", "wait"),
                         ("gather", "gather"), ("gather", "gather"))


def test_simulate_views_last_me_other_per_agent():
    """Agent 1 punishes when agent 0 gathered last tick; agent 0 waits whenever it is behind.
    cap 9, grow 6, freeze 3:

    t0: a0 sees me 0 other 0 -> gathers; a1 sees last none -> gathers. a=1 b=1; 9 -> 7 -> 8
    t1: a0 me 1 other 1 -> gathers (a=2); a1 sees last gather -> punishes: a0 frozen 3 ticks. 8 -> 7 -> 8
    t2: a0 frozen waits; a1 still sees a0's t1 gather -> punishes again (freeze reset to 3). 8 -> 9
    t3..t5: a0 frozen waits; a1 sees last wait -> gathers: b = 2, 3, 4; 9 -> 8 -> 9 each tick
    t6: a0 free, me 2 other 4 -> behind -> waits (its own choice); a1 gathers, b = 5
    """
    p0 = parse_policy("if me lt other then wait;gather")
    p1 = parse_policy("if last eq gather then punish;gather")
    r = simulate(p0, p1, cap=9, grow=6, ticks=7, freeze=3)
    assert r.actions == (("gather", "gather"), ("gather", "punish"), ("wait", "punish"), ("wait", "gather"),
                         ("wait", "gather"), ("wait", "gather"), ("wait", "gather"))
    assert r.scores == (2, 5)
    assert r.stocks == (9, 8, 8, 9, 9, 9, 9, 9)


def test_simulate_raises_step_limit():
    p = parse_policy("if stock gt 3 and me lt 2 then gather;wait")
    with pytest.raises(RuleError) as e:
        simulate(p, GREEDY, cap=5, grow=2, ticks=3, max_steps=3)
    assert e.value.kind == "step_limit"


def test_self_play_runs_the_policy_on_both_sides():
    g = Game(5, 2, "self", ticks=4)
    assert g.play(GREEDY).scores == (3, 4)     # = the greedy pair above
    p = parse_policy("if stock ge 5 then gather;wait")
    assert g.opponent_policy(p) is p


def test_opponents_are_valid_programs_for_every_grow():
    for name, template in OPPONENTS.items():
        if template is not None:
            for grow in (1, 7, 99):
                parse_policy(template.format(g=grow))


def test_game_metrics_and_opponents():
    """Game(cap 5, grow 2, greedy, 4 ticks) plays the greedy trace above: a = 3, b = 4, stock 0."""
    from entrolab.agents.rules import format_policy

    g = Game(5, 2, "greedy", ticks=4)
    r = g.play(GREEDY)
    assert r.scores == (3, 4)
    assert g.metrics(r) == {"return": 0.75, "efficiency": 0.875, "equality": 1 - 1 / 14, "sustainability": 0.0}
    assert format_policy(Game(9, 5, "cautious").opponent_policy(GREEDY)) == "if stock gt 5 then gather;wait"
    assert format_policy(Game(9, 4, "warden").opponent_policy(GREEDY)) == \
        "if last eq gather and stock le 4 then punish;if stock gt 4 then gather;wait"
    assert Game(9, 4, "greedy").opponent_policy(parse_policy("wait")) == GREEDY
    assert (Game(9, 4, "self").ticks, Game(9, 4, "self").freeze) == (40, 3)


def test_game_passes_freeze_and_step_limit_on():
    p0 = parse_policy("if tick eq 0 then punish;gather")
    assert Game(5, 2, "greedy", ticks=5, freeze=2).play(p0).scores == (4, 3)   # the punish trace above
    assert Game(5, 2, "greedy", ticks=5, freeze=3).play(p0).scores == (4, 2)   # t1..t3 frozen: b = 1 + 1
    with pytest.raises(RuleError):
        Game(5, 2, "greedy", ticks=3, max_steps=1).play(parse_policy("if stock gt 3 then gather"))


def test_simulate_defaults_and_first_tick_last_is_none():
    """Both agents see last = none at tick 0 (and punish, freezing each other for the default 3
    ticks: t1..t3 forced waits), then see each other's forced waits."""
    p = parse_policy("if last eq none then punish;if last eq wait then gather;wait")
    r = simulate(p, p, cap=5, grow=2, ticks=5)
    assert r.actions == (("punish", "punish"),) + (("wait", "wait"),) * 3 + (("gather", "gather"),)
    assert r.scores == (1, 1)
    q = parse_policy("if tick eq 0 then punish;gather")
    assert simulate(q, GREEDY, cap=5, grow=2, ticks=5).scores == (4, 2)     # default freeze = 3
