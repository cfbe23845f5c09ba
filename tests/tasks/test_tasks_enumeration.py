"""Brute-force enumeration of Countdown solutions against hand lists and an independent search."""

import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.tasks.enumeration import solutions, table
from entrolab.tasks.expr import parse


def test_hand_listed_solutions_of_1_2_3_to_6():
    """Every expression over {1,2,3} equal to 6, derived by hand.

    Pick the first pair, then combine with the third number:
      {1,2} -> 1+2=3 (+3: 1+2+3), 1*2=2 (*3: 1*2*3), 2/1=2 (*3: 3*(2/1)), 1/2 (3/(1/2)).
      {1,3} -> 1+3=4 (+2: 1+2+3 again), 1*3 (*2: 1*2*3 again), 3/1 (*2: 2*(3/1)),
               1/3 (2/(1/3)).
      {2,3} -> 2+3=5 (+1: again), 2*3=6 (*1: again; /1: 2*3/1).
    No subtraction reaches 6 (it would need a pair worth 9, -3, 7 or -5 etc.).
    """
    assert solutions((1, 2, 3), 6) == sorted(
        ["1+2+3", "1*2*3", "3*(2/1)", "3/(1/2)", "2*(3/1)", "2/(1/3)", "2*3/1"])


def test_small_hand_cases():
    """2,3 -> 6 only as 2*3; 2,2,3 -> 7 as 2+2+3 or 3+2*2; 4 famous 3,3,8,8 -> 24 is 8/(3-8/3)."""
    assert solutions((2, 3), 6) == ["2*3"]
    assert solutions((2, 2, 3), 7) == ["2+2+3", "3+2*2"]
    assert solutions((3, 3, 8, 8), 24) == ["8/(3-8/3)"]
    assert solutions((1, 1, 1), 9) == []
    assert solutions((5,), 5) == ["5"]


def _brute_force(numbers, target):
    """Independent search: every permutation x every operator triple x every tree shape,
    written out as fully parenthesised text and judged by the parser."""
    shapes = {  # numbers a b c d, operators p q r
        2: ["({a}{p}{b})"],
        3: ["(({a}{p}{b}){q}{c})", "({a}{p}({b}{q}{c}))"],
        4: ["((({a}{p}{b}){q}{c}){r}{d})", "(({a}{p}({b}{q}{c})){r}{d})", "(({a}{p}{b}){q}({c}{r}{d}))",
            "({a}{p}(({b}{q}{c}){r}{d}))", "({a}{p}({b}{q}({c}{r}{d})))"],
    }
    out = set()
    n = len(numbers)
    for perm in set(itertools.permutations(numbers)):
        for ops in itertools.product("+-*/", repeat=n - 1):
            for shape in shapes[n]:
                e = parse(shape.format(**dict(zip("abcd", perm)), **dict(zip("pqr", ops))), max_depth=10)
                if e.value == target:
                    out.add(e.text)
    return sorted(out)


@pytest.mark.parametrize("numbers, target", [((1, 2, 3), 6), ((2, 5, 7, 9), 24), ((1, 1, 5, 6), 31),
                                             ((3, 3, 3, 4), 12), ((2, 4, 4, 8), 0)])
def test_matches_independent_brute_force(numbers, target):
    assert solutions(numbers, target) == _brute_force(numbers, target)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=2, max_size=4), st.integers(-5, 40))
def test_targeted_search_equals_full_table(numbers, target):
    """The split-and-look-up search finds exactly the full table's entries at the target."""
    full = sorted(table(tuple(sorted(numbers))).get(Fraction(target), {}))
    assert solutions(numbers, target) == full
