"""The Countdown expression parser: canonical form, exact values, bounds and bad input."""

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.tasks.expr import ExprError, canonicalize, parse, steps


@pytest.mark.parametrize("text, canon", [
    # commutative operands sorted (numbers ascending by value, then compounds by text)
    ("(3+5)*7", "7*(3+5)"),
    ("7*(5+3)", "7*(3+5)"),
    (" 7 * ( 3 + 5 ) ", "7*(3+5)"),
    ("10+3", "3+10"),            # numeric order, not string order ("10" < "3" as strings)
    # associative chains flattened
    ("1+(2+3)", "1+2+3"),
    ("(3*4)*2", "2*3*4"),
    # '-' and '/' stay binary and ordered; no algebra across operators
    ("8-(5-3)", "8-(5-3)"),
    ("8-5+3", "3+(8-5)"),        # parsed as (8-5)+3: a sum whose terms are 3 and (8-5)
    ("8+3-5", "3+8-5"),          # parsed as (8+3)-5
    ("3*(8/2)", "3*(8/2)"),
    ("3*8/2", "3*8/2"),
    ("6/(2/3)", "6/(2/3)"),
    ("6/2/3", "6/2/3"),
    ("(8/2)/(3-1)", "8/2/(3-1)"),
    # redundant parentheses dropped; aliases mapped
    ("((((1))))", "1"),
    ("(5+3)×7", "7*(3+5)"),
    ("8÷(5−3)", "8/(5-3)"),
])
def test_canonical_form_hand_cases(text, canon):
    assert canonicalize(text) == canon
    assert canonicalize(canon) == canon  # idempotent


def test_non_rewrites_keep_forms_apart_with_equal_values():
    """a-(b-c) and a-b+c are equal in value but are different canonical answers (documented)."""
    a, b = parse("9-(5-2)"), parse("9-5+2")
    assert a.value == b.value == 6
    assert a.text != b.text


def test_exact_rational_arithmetic():
    """8/(3-8/3): 3-8/3 = 1/3 exactly, 8/(1/3) = 24 exactly (floats give 23.99999...)."""
    e = parse("8/(3-8/3)")
    assert e.value == Fraction(24) and isinstance(e.value, Fraction)
    assert e.numbers == (3, 3, 8, 8)


def test_division_by_zero_parses_with_no_value():
    e = parse("4/(3-3)")
    assert e.value is None and e.text == "4/(3-3)"


@pytest.mark.parametrize("text, reason", [
    ("3x5", "bad_char"),          # 'x' is not accepted as multiplication
    ("3+5😀", "bad_char"),
    ("３+５", "bad_char"),          # full-width digits
    ("٣+5", "bad_char"),           # Arabic-Indic digit (int() would accept it)
    ("3+5\n", "bad_char"),
    ("3**5", "parse_error"),
    ("3+", "parse_error"),
    ("(3+5", "parse_error"),
    ("3+5)", "parse_error"),
    ("3 5", "parse_error"),
    ("-3+5", "parse_error"),      # no unary minus
    ("05+3", "parse_error"),      # leading zero
    ("", "parse_error"),
    ("   ", "parse_error"),
    ("()", "parse_error"),
])
def test_rejects_bad_input(text, reason):
    with pytest.raises(ExprError) as err:
        parse(text)
    assert err.value.reason == reason


def test_depth_bound():
    """8 nested pairs are accepted at max_depth=8, 9 are too deep."""
    assert parse("(" * 8 + "1" + ")" * 8, max_depth=8).text == "1"
    with pytest.raises(ExprError) as err:
        parse("(" * 9 + "1" + ")" * 9, max_depth=8)
    assert err.value.reason == "too_deep"


def test_length_bound_is_fast_on_huge_input():
    start = time.perf_counter()
    for text in ("1+" * 5000 + "1", "😀" * 10_000, "(" * 10_000):
        with pytest.raises(ExprError) as err:
            parse(text, max_chars=64)
        assert err.value.reason == "too_long"
    assert time.perf_counter() - start < 0.1
    assert parse("1+" * 31 + "1", max_chars=64).value == 32  # 63 characters: accepted


def test_steps_hand_derived():
    """7*(3+5): the sum first (3+5=8), then 7*8=56; fractions/negatives are bracketed operands."""
    assert steps(parse("(3+5)*7")) == ["3+5=8", "7*8=56"]
    assert steps(parse("1+2+3")) == ["1+2=3", "3+3=6"]
    assert steps(parse("8/(3-8/3)")) == ["8/3=8/3", "3-(8/3)=1/3", "8/(1/3)=24"]
    assert steps(parse("(1-2)*(3-5)")) == ["1-2=-1", "3-5=-2", "(-1)*(-2)=2"]


# ---------------------------------------------------------------------- properties
def _tree(leaves=st.integers(0, 12)):
    return st.recursive(leaves, lambda kids: st.tuples(st.sampled_from("+-*/"), kids, kids), max_leaves=6)


def _render(t, swap=False):
    """Fully parenthesised text; with swap, operands of every + and * are swapped."""
    if isinstance(t, int):
        return str(t)
    op, a, b = t
    if swap and op in "+*":
        a, b = b, a
    return f"({_render(a, swap)}{op}{_render(b, swap)})"


def _value(t):
    """Independent evaluator over the tree (None on division by zero)."""
    if isinstance(t, int):
        return Fraction(t)
    op, a, b = t
    x, y = _value(a), _value(b)
    if x is None or y is None or (op == "/" and y == 0):
        return None
    return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else None}[op]


@settings(max_examples=200, deadline=None)
@given(_tree())
def test_canonical_is_idempotent_swap_invariant_and_value_preserving(t):
    kw = dict(max_chars=10_000, max_depth=100)
    e = parse(_render(t), **kw)
    assert parse(e.text, **kw).text == e.text               # idempotent
    assert parse(_render(t, swap=True), **kw).text == e.text  # commutative swaps don't matter
    assert e.value == _value(t)                              # same exact value
    assert parse(e.text, **kw).value == e.value
