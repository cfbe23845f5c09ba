# Every target is self-contained: it creates .venv if missing and installs entrolab into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: env demo test bench results clean

$(BIN)/entrolab: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU-only machines: the pinned CPU wheel first, so the range in pyproject needs nothing more.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(BIN)/entrolab

env: $(BIN)/entrolab

demo: env
	$(BIN)/entrolab demo

test: env
	# One torch thread: on a shared 2-core machine two threads are 10-20x slower for tiny models.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -p no:randomly tests

bench: env
	$(BIN)/python benchmarks/demo_time.py

results: env
	# Every testbed study (5 seeds, 2 runs side by side), then the tables of docs/results/*.md.
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/results.py all --seeds 0 1 2 3 4 --jobs 2

clean:
	rm -rf runs .cache
