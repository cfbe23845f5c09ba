"""Countdown verifier cost on long answers: time and peak memory of ``expr.parse`` per answer shape.

Usage: OMP_NUM_THREADS=1 python benchmarks/countdown_parse.py [--chars 2500 10000] [--repeats 5]

Each shape is a valid expression of at most ``--chars`` characters (10,000 is the largest
``max_answer_chars`` the countdown task accepts) that once made the parser quadratic. Time is the
best of ``--repeats`` runs (process CPU time) of parse + canonical text + literal multiset (what
``verify`` reads); memory is the tracemalloc peak of one run. docs/tasks.md quotes this output.
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
import tracemalloc

SHAPES = {  # name → (unit, separator): the answer is the unit repeated, joined by the separator
    "sum 1+1+...": ("1", "+"),
    "difference 7-7-...": ("7", "-"),
    "quotient 7/7/...": ("7", "/"),
    "alternating 1-2+1-2...": ("1-2", "+"),
    "sums of products 2*3+4*5-...": ("2*3+4*5", "-"),
    "bracketed (1+2-3)*...": ("(1+2-3)", "*"),
}


def make(unit: str, sep: str, chars: int) -> str:
    """The longest ``sep.join([unit] * k)`` with at most ``chars`` characters."""
    return sep.join([unit] * ((chars + len(sep)) // (len(unit) + len(sep))))


def _run(text: str) -> None:
    from entrolab.tasks.expr import parse

    e = parse(text, max_chars=len(text), max_depth=100)
    e.text, e.numbers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chars", type=int, nargs="+", default=[2500, 10_000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    _run("1+1")  # import outside the timed region
    gc.collect()
    gc.freeze()  # keep the one-off full collection of import-time objects out of the timings
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or 'cpu'}")
    print(f"{'shape':32} {'chars':>6} {'CPU ms':>8} {'peak MB':>8}")
    for name, (unit, sep) in SHAPES.items():
        for chars in args.chars:
            text = make(unit, sep, chars)
            best = min(_timed(text) for _ in range(args.repeats))
            tracemalloc.start()
            _run(text)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{name:32} {len(text):>6} {best * 1e3:>8.1f} {peak / 1e6:>8.2f}")


def _timed(text: str) -> float:
    # CPU time of this process, not wall time: on a shared machine a run of a few ms is often
    # descheduled, which would add the other processes' time to ours.
    start = time.process_time()
    _run(text)
    return time.process_time() - start


if __name__ == "__main__":
    main()
