# The two commands of the README. Each creates (or reuses) .venv and installs the pinned package into it.
PY       ?= python3.11
VENV     ?= .venv
BIN      := $(VENV)/bin
DEMO_DIR ?= raypkg_results
# The demo: all seven arms on the shipped 10,984 real HIGGS rows, capped so it ends in ~10 min on 2 cores.
ifndef DEMO_NAME
DEMO_NAME := demo-$(shell date +%Y%m%d-%H%M%S)
endif
DEMO_ARGS ?= --max-epochs 80 --patience 30 --storage $(DEMO_DIR) --name $(DEMO_NAME) --by trial

.PHONY: demo test bench clean

$(BIN)/raypkg: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/raypkg
	$(BIN)/raypkg arms
	$(BIN)/raypkg sweep $(DEMO_ARGS)
	$(BIN)/raypkg report $(DEMO_DIR)/$(DEMO_NAME) --out $(DEMO_DIR)/$(DEMO_NAME)/report

test: $(BIN)/raypkg
	$(BIN)/python -m pytest -q --durations=10

# The benchmarks of README's Performance section: tables on stdout, JSON in bench/out/ (~15 min on 2 cores).
bench: $(BIN)/raypkg
	$(BIN)/python bench/ingest.py --rows 1e6
	$(BIN)/python bench/sweep_cost.py
	$(BIN)/python bench/epoch_cost.py --arms tiny,large --epochs 15

clean:
	rm -rf $(VENV) *.egg-info
