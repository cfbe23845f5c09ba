"""The gathering-game rule language: tokenizer, parser (every error kind with its position),
canonical printer and interpreter (hand-counted steps, the step limit)."""

import itertools

import pytest

from entrolab.agents.rules import (
    ACTIONS, BoolOp, Cmp, Lit, Not, Num, Policy, Rule, RuleError, Var, View, decide, format_policy,
    parse_policy, tokenize,
)


def view(stock=5, me=0, other=0, tick=0, last="none"):
    return View(stock=stock, me=me, other=other, tick=tick, last=last)


# ------------------------------------------------------------------ valid programs
def test_parse_single_action_and_rules():
    assert parse_policy("gather") == Policy((Rule(None, "gather", 0),))
    p = parse_policy("if stock ge 8 then gather;wait")
    assert p == Policy((Rule(Cmp("ge", Var("stock"), Num(8)), "gather", 0), Rule(None, "wait", 26)))


def test_parse_precedence_not_and_or():
    """``not`` binds tighter than ``and``, ``and`` tighter than ``or`` (the EBNF's cond/conj/neg)."""
    p = parse_policy("if not me gt 1 and other lt 2 or tick eq 3 then punish")
    c = p.rules[0].cond
    assert c == BoolOp("or", (BoolOp("and", (Not(Cmp("gt", Var("me"), Num(1))),
                                             Cmp("lt", Var("other"), Num(2)))),
                              Cmp("eq", Var("tick"), Num(3))))


def test_parse_last_compares_with_actions_both_ways_and_none():
    p = parse_policy("if last eq gather then punish;if none ne last then wait;gather")
    assert p.rules[0].cond == Cmp("eq", Var("last"), Lit("gather"))
    assert p.rules[1].cond == Cmp("ne", Lit("none"), Var("last"))


def test_parse_spacing_tabs_parentheses_and_trailing_semicolon():
    a = parse_policy("if (stock gt 3)then gather ;\twait;")
    b = parse_policy("if stock gt 3 then gather;wait")
    assert format_policy(a) == format_policy(b) == "if stock gt 3 then gather;wait"


def test_tokenize_positions():
    toks = tokenize("if(me lt 10)")
    assert [(t.kind, t.text, t.pos) for t in toks] == [
        ("word", "if", 0), ("(", "(", 2), ("word", "me", 3), ("word", "lt", 6), ("num", "10", 9),
        (")", ")", 11), ("end", "", 12)]


# ------------------------------------------------------------------ every error kind, with position
@pytest.mark.parametrize("text, kind, pos", [
    ("", "empty", 0),
    ("   ", "empty", 0),
    ("wait;" * 40 + "w", "too_long", 200),
    ("if stock > 3 then gather", "bad_char", 9),
    ("if Stock gt 3 then gather", "bad_char", 3),
    ("if stock gt 1000 then gather", "big_number", 12),
    ("if stok gt 3 then gather", "unknown_word", 3),
    ("if stock gt 3 gather", "syntax", 14),               # expected 'then'
    ("if stock 3 then gather", "syntax", 9),               # expected a comparison
    ("if stock wait 3 then gather", "syntax", 9),          # a word, but not a comparison
    ("if X then gather", "bad_char", 3),
    ("if stock gt then gather", "syntax", 12),             # expected a term
    ("if stock gt 3 then", "syntax", 18),                  # expected an action, got the end
    ("gather wait", "syntax", 7),                          # expected ';' or the end
    ("if (stock gt 3 then gather", "syntax", 15),          # expected ')'
    ("then gather", "syntax", 0),
    (";gather", "syntax", 0),
    ("if stock eq gather then wait", "type", 3),
    ("if last eq 3 then wait", "type", 3),
    ("if last eq last then wait", "type", 3),
    ("if gather eq wait then wait", "type", 3),
    ("if last gt gather then wait", "type", 8),            # actions compare only with eq / ne
    ("wait;" * 8 + "gather", "too_many_rules", 40),
    ("if not not not not not not not me gt 1 then wait", "too_deep", 27),
    ("if ((((((( me gt 1))))))) then wait", "too_deep", 9),
])
def test_every_error_kind_has_its_position(text, kind, pos):
    with pytest.raises(RuleError) as e:
        parse_policy(text)
    assert (e.value.kind, e.value.pos) == (kind, pos)
    assert str(e.value).startswith(f"at {pos}: ")


def test_error_messages_name_what_was_expected_and_found():
    with pytest.raises(RuleError, match=r"at 14: expected 'then', got 'gather'"):
        parse_policy("if stock gt 3 gather")
    with pytest.raises(RuleError, match=r"at 18: expected an action \(gather, wait, punish\), got end of policy"):
        parse_policy("if stock gt 3 then")
    with pytest.raises(RuleError, match=r"unknown word 'stok'"):
        parse_policy("if stok gt 3 then gather")


@pytest.mark.parametrize("text, message", [
    ("", "at 0: empty policy"),
    ("if stock gt 12345 then wait", "at 12: number 12345 has more than 3 digits"),
    ("if stok gt 3 then gather", "at 3: unknown word 'stok'"),
    ("if abcdefghijklmnop gt 3 then wait", "at 3: unknown word 'abcdefghijkl'"),
    ("gather!", "at 6: bad character '!'"),
    ("if stock 3 then gather", "at 9: expected a comparison (lt, le, gt, ge, eq, ne), got '3'"),
    ("if stock gt then gather", "at 12: expected a number, observable or action, got 'then'"),
    ("gather wait", "at 7: expected ';' or end of policy, got 'wait'"),
    ("if stock eq gather then wait", "at 3: cannot compare stock with gather (compare numbers with numbers, "
                                     "or last with an action or none)"),
    ("if last gt gather then wait", "at 8: actions compare only with eq or ne, not gt"),
    ("wait;" * 8 + "gather", "at 40: more than 8 rules"),
    ("if not not not not not not not me gt 1 then wait", "at 27: more than 6 nested 'not' or '('"),
    ("wait;" * 40 + "w", "at 200: policy longer than 200 characters"),
])
def test_error_messages_exact(text, message):
    """What the model reads after 'error: ' is exactly this text."""
    with pytest.raises(RuleError) as e:
        parse_policy(text)
    assert str(e.value) == message


def test_limits_are_keywords_and_exact():
    """Exactly at each limit parses; one past it fails."""
    parse_policy("wait;" * 7 + "wait")                                   # 8 rules
    parse_policy("if not not not not not not me gt 1 then wait")        # 6 nested
    parse_policy("gather", max_chars=6)
    with pytest.raises(RuleError, match="too_long|longer than 5"):
        parse_policy("gather", max_chars=5)
    with pytest.raises(RuleError) as e:
        parse_policy("wait;wait;wait", max_rules=2)
    assert (e.value.kind, e.value.pos) == ("too_many_rules", 10)
    with pytest.raises(RuleError) as e:
        parse_policy("if not me gt 1 then wait", max_depth=0)
    assert (e.value.kind, e.value.pos) == ("too_deep", 3)
    parse_policy("if stock gt 999 then wait")


# ------------------------------------------------------------------ canonical text
def test_format_policy_minimal_parentheses():
    cases = {
        "if (stock gt 3 or me lt 2) and not (last eq punish or tick ge 5) then gather ; wait":
            "if (stock gt 3 or me lt 2) and not (last eq punish or tick ge 5) then gather;wait",
        "if ((stock gt 3)) and (me lt 2) then gather": "if stock gt 3 and me lt 2 then gather",
        "if not (stock gt 1 and me lt 2) then wait": "if not (stock gt 1 and me lt 2) then wait",
        "if stock gt 1 or (me lt 2 and other eq 0) then wait": "if stock gt 1 or me lt 2 and other eq 0 then wait",
        "if (stock gt 1 or me lt 2) or other eq 0 then wait": "if stock gt 1 or me lt 2 or other eq 0 then wait",
    }
    for text, canon in cases.items():
        assert format_policy(parse_policy(text)) == canon
        assert format_policy(parse_policy(canon)) == canon


def _views():
    for stock, me, other, tick, last in itertools.product((0, 2, 5), (0, 1, 3), (0, 2), (0, 4), ("none",) + ACTIONS):
        yield view(stock, me, other, tick, last)


@pytest.mark.parametrize("text", [
    "if (stock gt 3 or me lt 2) and not (last eq punish or tick ge 4) then gather;wait",
    "if not (stock gt 1 and me lt 2) then punish;if other ge me or last ne gather then gather",
    "if not not stock le 2 and (tick lt 1 or (me eq other and none eq last)) then wait;punish",
])
def test_canonical_text_is_the_same_program(text):
    """Brute force over a grid of views: the canonical text decides exactly like the original."""
    a, b = parse_policy(text), parse_policy(format_policy(parse_policy(text)))
    assert all(decide(a, v) == decide(b, v) for v in _views())


# ------------------------------------------------------------------ interpreter
def test_decide_first_firing_rule_and_default_wait():
    p = parse_policy("if stock lt 2 then wait;if last eq gather then punish;if me le other then gather")
    assert decide(p, view(stock=1))[0] == "wait"
    assert decide(p, view(stock=5, last="gather"))[0] == "punish"
    assert decide(p, view(stock=5, me=1, other=1))[0] == "gather"
    assert decide(p, view(stock=5, me=2, other=1))[0] == "wait"   # nothing fired


def test_decide_counts_steps_with_short_circuit():
    """Steps: 1 per rule tried + 1 per condition node evaluated.

    'if stock gt 3 and me lt 2 then gather;wait'
      stock=2:        rule1(1) and(2) stock gt 3 false(3), short-circuit; rule2(4) -> wait, 4
      stock=5, me=0:  rule1(1) and(2) true(3) true(4) -> gather, 4
      stock=5, me=3:  rule1(1) and(2) true(3) false(4); rule2(5) -> wait, 5
    'if stock gt 3 or me lt 2 then gather': stock=5 -> 1 + or + first cmp = 3 (second skipped)
    'if not not me eq 0 then gather': 1 + not + not + cmp = 4
    """
    p = parse_policy("if stock gt 3 and me lt 2 then gather;wait")
    assert decide(p, view(stock=2)) == ("wait", 4)
    assert decide(p, view(stock=5, me=0)) == ("gather", 4)
    assert decide(p, view(stock=5, me=3)) == ("wait", 5)
    assert decide(parse_policy("if stock gt 3 or me lt 2 then gather"), view(stock=5)) == ("gather", 3)
    assert decide(parse_policy("if not not me eq 0 then gather"), view()) == ("gather", 4)


def test_single_not_negates_and_default_wait_counts_steps():
    """'if not me eq 0 then gather': rule(1) not(2) cmp(3); me = 0 -> not true = false -> nothing
    fires -> wait after 3 steps; me = 1 -> gather after 3 steps."""
    p = parse_policy("if not me eq 0 then gather")
    assert decide(p, view(me=0)) == ("wait", 3)
    assert decide(p, view(me=1)) == ("gather", 3)
    with pytest.raises(RuleError) as e:
        decide(p, view(), max_steps=2)
    assert (e.value.kind, e.value.pos) == ("step_limit", 0)


def test_step_limit_names_the_rule_being_run():
    p = parse_policy("if stock gt 3 and me lt 2 then gather;wait")
    assert decide(p, view(stock=2), max_steps=4) == ("wait", 4)       # exactly at the limit
    with pytest.raises(RuleError) as e:
        decide(p, view(stock=2), max_steps=3)
    assert (e.value.kind, e.value.pos) == ("step_limit", 38)          # rule 2 starts at 38
    assert "more than 3 steps" in str(e.value)


def test_comparisons_all_six_ops():
    for op, expect in [("lt", [True, False, False]), ("le", [True, True, False]), ("gt", [False, False, True]),
                       ("ge", [False, True, True]), ("eq", [False, True, False]), ("ne", [True, False, True])]:
        p = parse_policy(f"if stock {op} 3 then gather")
        got = [decide(p, view(stock=s))[0] == "gather" for s in (2, 3, 4)]
        assert got == expect, op


def test_every_observable_is_read():
    assert decide(parse_policy("if me gt other then gather"), view(me=2, other=1))[0] == "gather"
    assert decide(parse_policy("if me gt other then gather"), view(me=1, other=2))[0] == "wait"
    assert decide(parse_policy("if tick ge 3 then gather"), view(tick=3))[0] == "gather"
    assert decide(parse_policy("if tick ge 3 then gather"), view(tick=2))[0] == "wait"
    assert decide(parse_policy("if last eq none then punish"), view(last="none"))[0] == "punish"
    assert decide(parse_policy("if last eq none then punish"), view(last="wait"))[0] == "wait"
    assert decide(parse_policy("if 3 lt stock then gather"), view(stock=4))[0] == "gather"
