"""One module per agent study: each defines ``STUDY`` (see ``benchmarks/agents_study.py``)."""
