# The README's commands. Each creates .venv and installs on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup train test docs bench bench-memory clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,test,docs]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

# -n 2: one worker per core; --durations shows where the time goes.
test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 $(ARGS)

# The documentation site, offline, warnings as errors: docs/_build/html/index.html.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# Speed benchmarks (a few minutes each); their tables go into BENCHMARKS.md.
bench: $(STAMP)
	$(PY) -m ssm.bench.kernels $(ARGS)
	$(PY) -m ssm.bench.scan $(ARGS)
	$(PY) -m ssm.bench.ssd $(ARGS)
	$(PY) -m ssm.bench.msign $(ARGS)
	$(PY) -m ssm.bench.monarch $(ARGS)

# The memory benchmark (models x tasks, each cell a training run): results table and plots
# in runs/bench/memory-$(PRESET). PRESET=ci takes minutes, cpu about 80 minutes, paper is for a GPU.
PRESET ?= ci
bench-memory: $(STAMP)
	$(PY) -m ssm.bench.memory --preset $(PRESET) $(ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache
