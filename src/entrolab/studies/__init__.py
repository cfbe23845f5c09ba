"""The testbed studies behind docs/results/*.md: one command runs them and writes the pages.

``plan``: which recipes × settings × seeds each study runs, and a claim-based multi-process
runner (``python benchmarks/results.py run``). ``stats``: paired differences from the baseline
with 95 % intervals. ``pages``: the generated sections of the results pages and their provenance.
"""
