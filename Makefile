# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Set-up is idempotent: the venv is rebuilt only when the lock or a subpackage's pyproject changes.
#
# The environment: poetry.lock is the single source of truth. `make lock` runs Poetry (pinned in
# the lock's own dev group) to re-resolve it and exports it, with hashes, to requirements/dev.lock;
# `make venv` installs that export with `pip install --require-hashes --no-deps` (no resolver at
# install time, fast with a warm pip cache, works with any PyPI mirror). tests/test_lock.py fails
# when poetry.lock, requirements/dev.lock and the pyprojects disagree.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hermes-installed
# torch: exactly the 2.13.0 CPU build, never from the lock and never with its (CUDA) dependencies.
# PyPI's Linux torch wheel is the CUDA build, so the CPU build comes from PyTorch's CPU index (pip's
# own configuration, e.g. a local wheel folder, is consulted too).
TORCH_VERSION := 2.13.0+cpu
TORCH := torch==$(TORCH_VERSION)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP := $(BIN)/python -m pip --disable-pip-version-check
SUBPACKAGES := quiver aeriel stillwater cloudbreak
# Applications on top of the libraries (installed editable in the venv, never published)
APPS := apps/deepclean
PYPROJECTS := $(foreach p,$(SUBPACKAGES) $(APPS),$(p)/pyproject.toml)
PYTEST_ARGS ?=
# The suite runs in PYTEST_WORKERS processes (pytest-xdist; a file's tests stay in one process, so
# its module and session fixtures are shared as written). Most of a test's time is spent waiting on
# a real server (Triton polls its shutdown once a second), so two workers help even on two cores.
# PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2

.PHONY: venv test demo bench lock lint format typecheck docs docs-serve build clean system-deps

venv: $(STAMP)

$(STAMP): requirements/dev.lock $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet --require-hashes --no-deps -r requirements/dev.lock
	@# torch: skipped when the exact build is there already (keeps a re-run fast and offline)
	$(BIN)/python -c "import importlib.metadata as m, sys; sys.exit(m.version('torch') != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PIP) install --quiet --retries 1 --no-deps --extra-index-url "$(TORCH_INDEX)" "$(TORCH)"
	$(PIP) install --quiet --no-deps --no-build-isolation $(foreach p,$(SUBPACKAGES) $(APPS),-e ./$(p))
	$(PIP) check
	$(BIN)/python -c "import numpy, sys; sys.exit('numpy>=2 breaks the local Triton python backend') if int(numpy.__version__.split('.')[0]) >= 2 else None"
	@touch $(STAMP)

test: venv system-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

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

# The demo is an application (apps/deepclean), not part of a library: it adds `hermes demo`
# through the hermes.cli entry-point group.
demo: venv
	$(BIN)/hermes demo

bench: venv
	$(BIN)/python benchmarks/run.py

lint: venv
	$(BIN)/pre-commit run --all-files

format: venv
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy quiver/src aeriel/src stillwater/src cloudbreak/src apps/deepclean/src

# The API reference (mkdocs-material + mkdocstrings): warnings are errors. Output in site/.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# Re-resolve poetry.lock from the pyprojects, then export it to requirements/dev.lock.
# Needs only the lock's own Poetry, so it works while the venv is out of date (a pyproject gained
# a dependency that `make venv`'s `pip check` would refuse): $(BIN)/poetry is bootstrapped from
# the current dev.lock without the full set-up.
lock: $(BIN)/poetry
	$(BIN)/poetry lock --no-interaction
	$(BIN)/python requirements/lock.py write

$(BIN)/poetry:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r requirements/dev.lock

build:
	for p in $(SUBPACKAGES); do $(BIN)/python -m build --no-isolation --wheel --outdir dist $$p || exit 1; done

clean:
	rm -rf $(VENV) dist site .pytest_cache .mypy_cache .ruff_cache
