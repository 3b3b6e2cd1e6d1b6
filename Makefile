# `make test` and `make demo` create .venv from requirements.txt when it is missing or older than it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements

.PHONY: test test-fast images demo bench-wan bench-wan-scaling bench-dask-compat lint typecheck unit clean-venv

# The data plane is installed (editable) as the distribution the images and the kernel install, so that every
# process here sees the same package metadata and version.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	cp requirements.txt $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Every test, on JOBS processes (pytest-xdist): each test module runs whole on one of them, with its fixtures
# (loadfile: loadgroup does not group under pytest 9.2, pytest-xdist#1386).
JOBS ?= 2
unit: $(STAMP)
	$(BIN)/pytest -n $(JOBS) --dist loadfile --durations=25

# The test command (README, CI): lint, type-check, then every test.
test: lint typecheck unit

# The edit loop: lint, types and the tests that start no process, need no root and take under about 10 s
# (the marks of tests/conftest.py; a test that starts a process without its mark fails).
test-fast: lint typecheck
	$(BIN)/pytest -q -m "not processes and not root and not slow"

# The images from the real Dockerfiles, on a Debian base debootstrap builds here (root, a running dockerd: see
# .ci/run); each step is skipped when its inputs are unchanged.
images: $(STAMP)
	$(BIN)/python -m local_platform.images

# The local platform's demo: up, the reference analysis with its audit and a plot, down (STACK=lean: the lean stack).
STACK ?= dev
demo: $(STAMP)
	$(BIN)/python -m local_platform demo --stack $(STACK)

# The WAN benchmark (as root: it creates network namespaces); ARGS passes flags, e.g. ARGS="--repeats 1".
bench-wan: $(STAMP)
	$(BIN)/python bench/wan.py $(ARGS)

# How its cost grows with the data (as root): bench/wan.py at 0.25, 0.5, 1 and 2 GB per region.
bench-wan-scaling: $(STAMP)
	$(BIN)/python bench/wan_scaling.py $(ARGS)

# Dask's own tests on the platform's scheduler (REPO: a dask/distributed git directory, e.g. from a snapshot).
bench-dask-compat: $(STAMP)
	$(BIN)/python bench/dask_compat.py --repo $(REPO) $(ARGS)

clean-venv:
	rm -rf $(VENV)
