# spreadpy + wackapy. `make demo` and `make test` are the README's quick start.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint format sim demo bench soak soak-ci clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The README's main job: three loopback daemons, two spusers, a kill -9.
demo: install
	$(PY) scripts/demo.py

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The deterministic simulator: every EVS property checked on every seed.
SEEDS ?= 10000
sim: install
	$(PY) -m spreadpy.sim --seeds $(SEEDS) --nodes 5 --loss 0.1 --dup 0.05 --reorder 0.05 --faults none
	$(PY) -m spreadpy.sim --seeds $(SEEDS) --nodes 3 --nodes-max 7 --loss 0.1 --dup 0.05 --reorder 0.05 --faults all

# Throughput, latency and failover on a three-namespace test bed (loopback without root);
# tables, JSON and plots under benchmarks/results/. PEER=<prefix of a hand-built Spread 5.0.1>
# runs the original side by side; BENCH_ARGS passes options (e.g. --jumbo: throughput again on
# an MTU 9000 bed with 8972-byte ring packets; see benchmarks/README.md).
BENCH_ARGS ?=
bench: install
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m benchmarks.harness $(BENCH_ARGS)

# kill -9 and link cuts under load, with a virtual-synchrony checker on what clients received.
soak: install
	$(PY) benchmarks/soak.py --duration 600

soak-ci: install
	$(PY) benchmarks/soak.py --duration 60 --no-progress

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .ruff_cache
