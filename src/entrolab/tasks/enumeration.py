"""Brute-force enumeration of Countdown expressions, deduplicated by canonical form.

An expression that uses every number of a multiset exactly once is a binary tree whose leaves
are those numbers and whose inner nodes are ``+ - * /``. We enumerate every such tree bottom-up
over sub-multisets, with exact ``Fraction`` values, skipping divisions by zero, and keep one
tree per canonical text (``expr.combine`` builds canonical trees), so "all solutions" means all
distinct canonical forms, as in the Countdown setup of Stream of Search (arXiv 2404.03683).

Cost: the full table of a multiset grows fast (a few thousand canonical trees for 4 numbers),
so :func:`solutions` never builds the table of the whole multiset. It splits the numbers into
two parts, takes the (cached) tables of both parts, and for each value of the part with fewer
values looks up, per operator, the one value of the other part that hits the target. Tables of
sub-multisets are cached by their sorted numbers and shared across problems.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from itertools import combinations

from entrolab.tasks.expr import Expr, combine, leaf

Table = dict[Fraction, dict[str, Expr]]  # value → canonical text → tree


def _splits(nums: tuple[int, ...]) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every way to cut the sorted multiset ``nums`` into two non-empty sorted parts (unordered)."""
    n = len(nums)
    out = set()
    for k in range(1, n // 2 + 1):
        for idx in combinations(range(n), k):
            left = tuple(nums[i] for i in idx)
            right = tuple(nums[i] for i in range(n) if i not in idx)
            out.add((left, right) if left <= right else (right, left))
    return out


@lru_cache(maxsize=8192)
def table(nums: tuple[int, ...]) -> Table:
    """All canonical expressions over the sorted multiset ``nums``, grouped by value.

    Every number is used exactly once; trees that divide by zero are dropped.
    Cached by ``nums`` (callers must pass it sorted). Do not mutate the result.
    """
    if len(nums) == 1:
        return {Fraction(nums[0]): {str(nums[0]): leaf(nums[0])}}
    out: Table = {}
    for left, right in _splits(nums):
        tl, tr = table(left), table(right)
        for ea in (e for group in tl.values() for e in group.values()):
            for eb in (e for group in tr.values() for e in group.values()):
                for op, x, y in (("+", ea, eb), ("*", ea, eb), ("-", ea, eb), ("-", eb, ea),
                                 ("/", ea, eb), ("/", eb, ea)):
                    e = combine(op, x, y)
                    if e.value is not None:
                        out.setdefault(e.value, {})[e.text] = e
    return out


def _hits(x: Fraction, target: Fraction) -> list[tuple[str, Fraction, bool]]:
    """``(op, y, swapped)`` such that ``x op y == target`` (or ``y op x`` when swapped).

    Needs ``x != 0`` and ``target != 0``: otherwise ``*`` and ``/`` hit for every ``y`` and the
    caller falls back to trying all pairs.
    """
    return [("+", target - x, False), ("-", x - target, False), ("-", target + x, True),
            ("*", target / x, False), ("/", target * x, True), ("/", x / target, False)]


def solutions(numbers: tuple[int, ...] | list[int], target: int | Fraction) -> list[str]:
    """Sorted canonical texts of every expression over ``numbers`` (each used once) equal to ``target``.

    Args:
        numbers: the multiset of operands (any order; 1 to about 5 numbers).
        target: the value to reach.
    Returns:
        The distinct canonical solutions, sorted as strings (empty if unsolvable).
    """
    nums = tuple(sorted(int(n) for n in numbers))
    if not nums:
        raise ValueError("need at least one number")
    target = Fraction(target)
    if len(nums) == 1:
        return [str(nums[0])] if nums[0] == target else []
    found: set[str] = set()

    def add(op: str, a: Expr, b: Expr) -> None:
        e = combine(op, a, b)
        if e.value == target:  # re-checks the lookup arithmetic; drops divisions by zero
            found.add(e.text)

    for left, right in _splits(nums):
        tx, ty = table(left), table(right)
        if len(tx) > len(ty):
            tx, ty = ty, tx
        for vx, group_x in tx.items():
            if vx == 0 or target == 0:  # degenerate: try every pair
                pairs = [(ex, ey) for ex in group_x.values() for g in ty.values() for ey in g.values()]
                for ex, ey in pairs:
                    for op in "+-*/":
                        add(op, ex, ey)
                        add(op, ey, ex)
                continue
            for op, vy, swapped in _hits(vx, target):
                for ey in ty.get(vy, {}).values():
                    for ex in group_x.values():
                        if swapped:
                            add(op, ey, ex)
                        else:
                            add(op, ex, ey)
    return sorted(found)
