# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Set-up is idempotent: the venv is rebuilt only when the lock or a subpackage's pyproject changes.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hermes-installed
TORCH := torch==2.13.0
SUBPACKAGES := quiver aeriel stillwater cloudbreak
PYPROJECTS := $(foreach p,$(SUBPACKAGES),$(p)/pyproject.toml)
PYTEST_ARGS ?=

.PHONY: venv test demo bench lock lint format typecheck build clean system-deps

venv: $(STAMP)

$(STAMP): requirements/dev.lock $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/dev.lock
	@# torch: exactly 2.13.0 (pip takes the local CPU build); --no-deps so nothing pulls CUDA wheels
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		$(foreach p,$(SUBPACKAGES),-e ./$(p))
	$(BIN)/python -m pip check
	$(BIN)/python -c "import numpy, sys; sys.exit('numpy>=2 breaks the local Triton python backend') if int(numpy.__version__.split('.')[0]) >= 2 else None"
	@touch $(STAMP)

test: venv system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Slurm tests start a real single-node cluster (slurmctld + slurmd + munged). As root on
# Debian/Ubuntu (as in CI) this installs Debian's slurm-wlm and munge once; elsewhere those tests
# skip and name the command. Idempotent: nothing runs when the daemons are installed.
SYSTEM_PACKAGES := slurm-wlm munge
system-deps:
	@if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(SYSTEM_PACKAGES) for the Slurm tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null \
			|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; }; \
	else echo "note: the Slurm tests skip here; install Slurm with: apt-get install $(SYSTEM_PACKAGES)"; fi

demo: venv
	$(BIN)/hermes demo

bench: venv
	$(BIN)/python benchmarks/run.py

lint: venv
	$(BIN)/pre-commit run --all-files

format: venv
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy quiver/src aeriel/src stillwater/src cloudbreak/src

# Regenerate the hash-pinned development lock (versions and hashes, no index URL).
lock:
	@command -v uv >/dev/null || test -x $(BIN)/uv || { echo "uv missing: pip install uv"; exit 1; }
	$$(command -v $(BIN)/uv || command -v uv) pip compile --quiet --python-version 3.11 \
		--python-platform x86_64-manylinux_2_35 --generate-hashes --no-header --no-annotate \
		$(foreach p,$(SUBPACKAGES),--no-emit-package hermes-$(p)) \
		--group pyproject.toml:dev requirements/dev.in -o requirements/dev.lock

build:
	for p in $(SUBPACKAGES); do $(BIN)/python -m build --no-isolation --wheel --outdir dist $$p || exit 1; done

clean:
	rm -rf $(VENV) dist .pytest_cache .mypy_cache .ruff_cache
