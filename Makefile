# The two commands a new user needs: `make run` and `make test`. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MESSENGER := $(BIN)/messenger
DATA_DIR ?= var/cluster
PORT ?= 8080

.PHONY: setup system-packages venv run cluster test test-unit fuzz lint stop destroy status

setup: system-packages venv

system-packages:
	@bash scripts/install-system-packages.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

cluster: setup
	$(MESSENGER) cluster up --data-dir $(DATA_DIR)
	$(MESSENGER) migrate up --topology $(DATA_DIR)/topology.toml

# The operator's token for /cluster: generated once, kept beside the cluster (mode 600).
OPS_TOKEN_FILE := $(DATA_DIR)/ops-token

run: cluster
	$(MESSENGER) seed demo --topology $(DATA_DIR)/topology.toml
	$(MESSENGER) cluster status --data-dir $(DATA_DIR)
	@test -s $(OPS_TOKEN_FILE) || (umask 077; $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))' > $(OPS_TOKEN_FILE))
	@echo "chat: http://127.0.0.1:$(PORT)/   cluster: http://127.0.0.1:$(PORT)/cluster (ops token in $(OPS_TOKEN_FILE))   docs: http://127.0.0.1:$(PORT)/docs"
	MESSENGER_PROFILE=dev MESSENGER_OPS_TOKEN="$$(cat $(OPS_TOKEN_FILE))" $(MESSENGER) serve --port $(PORT) --topology $(DATA_DIR)/topology.toml

status: venv
	$(MESSENGER) cluster status --data-dir $(DATA_DIR)

stop: venv
	$(MESSENGER) cluster down --data-dir $(DATA_DIR)

destroy: venv
	$(MESSENGER) cluster destroy --yes --data-dir $(DATA_DIR)

test: setup
	$(BIN)/pytest

test-unit: venv
	$(BIN)/pytest tests/unit

# The contract test with a random seed and a larger budget, phases repeated for FUZZ_SECONDS
# against a fresh server over a throwaway cluster; prints its figures (and any finding).
FUZZ_SECONDS ?= 300
fuzz: setup
	MESSENGER_FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/pytest tests/e2e/contract -s -p no:cacheprovider \
		--timeout $$(( $(FUZZ_SECONDS) + 300 ))

# Style (ruff), the layers of DESIGN.md (import-linter, contracts in pyproject.toml) and types
# (mypy --strict with warn_unused_ignores).
lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports
	$(BIN)/mypy

include mk/bench.mk
include mk/chaos.mk
