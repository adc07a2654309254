# The single entry point: `make run`, `make test`, `make lint`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
# `make run ROOT=/srv/legacy` watches that tree; by default a demo tree under demo/.
DEMO := $(CURDIR)/demo/legacy
ROOT ?= $(DEMO)
RUNDIR := $(CURDIR)/.run
PYTEST_ARGS ?=

.PHONY: install run test lint format mypy bench bench-tree demo clean bytecode sanitize soak faults

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -e '.[dev]'
	@# systemd-python builds only against libsystemd's headers; without them
	@# importd falls back to its own sd_notify and stderr priority prefixes.
	if pkg-config --exists libsystemd 2>/dev/null; then $(PIP) install -e '.[systemd]'; \
	else echo "libsystemd-dev not found: skipping systemd-python (fallback logging/notify)"; fi
	touch $(STAMP)

install: $(STAMP)

# Byte-compile our own modules: the editable install leaves them as sources, and where
# PYTHONDONTWRITEBYTECODE is set (as in many containers) every start of importd compiled
# ~70 modules again, 0.3-0.5 s of its start-up. Stale files are harmless: Python checks
# each against its source and ignores it when the source is newer.
bytecode: $(STAMP)
	$(PY) -m compileall -q daemon ctl > /dev/null

demo: $(STAMP)
	@test -d $(CURDIR)/demo/legacy || $(PY) tools/demo_tree.py $(CURDIR)/demo/legacy

run: $(STAMP) bytecode demo
	@mkdir -p $(RUNDIR)
	$(PY) tools/run_config.py --root '$(ROOT)' --state '$(RUNDIR)/state' $(if $(filter $(DEMO),$(ROOT)),--demo) > $(RUNDIR)/importd.toml
	@echo "importd: watching $(ROOT); ask it with: $(VENV)/bin/importctl status"
	exec $(VENV)/bin/importd run --config $(RUNDIR)/importd.toml

# The whole suite on SQLite, then the integration suite again with every daemon on a PostgreSQL
# catalog: on IMPORTD_TEST_PG_URL, or a throwaway server started from Debian's binaries; without
# either it prints "PostgreSQL: skipped (why)" (a failure under IMPORTD_TEST_PG_REQUIRED=1, as in CI).
# Each pass lists its 15 slowest tests: the suite's time is watched (under 15 minutes on 2 cores).
# Each pass runs in TEST_WORKERS processes (pytest-xdist; TEST_WORKERS=0: in pytest's own), a test
# file to one process (its module-scoped fixtures, such as the wheel's venv, made once); the tests
# marked `alone` (tests/conftest.py) run with no other beside them. `bytecode` first: the
# suite starts importd and importctl hundreds of times, each compiling our modules again without it.
TEST_WORKERS ?= 2
test: $(STAMP) bytecode
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)
	$(PY) -m tests.pg -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

# The C extensions rebuilt with AddressSanitizer and UBSan, and the tests that drive them (CI runs it).
sanitize: $(STAMP)
	$(PY) tools/sanitize.py

lint: $(STAMP)
	$(VENV)/bin/ruff check daemon ctl tests bench tools
	$(VENV)/bin/ruff format --check daemon ctl tests bench tools
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format daemon ctl tests bench tools
	$(VENV)/bin/ruff check --fix daemon ctl tests bench tools

bench: $(STAMP) bytecode
	$(PY) -m bench $(BENCH_ARGS)

# The scale section's tree (tools/bench_tree.py): 1,000,000 files by default, in
# $TMPDIR (or /var/tmp)/importd-bench-tree-<files>, reused while its parameters stay the same;
# `make bench-tree BENCH_TREE_ARGS="--files 20000"` for another size.
BENCH_TREE_ARGS ?=
bench-tree: $(STAMP)
	$(PY) tools/bench_tree.py $(BENCH_TREE_ARGS)

# Crash trials (tools/crash.py): the real daemon killed with -9 at random moments of random
# changes, then the catalog checked against the disk. `make soak SOAK_ARGS="--trials 1 --seed S"`
# replays one trial; `--catalog postgresql` runs them on a throwaway PostgreSQL server.
SOAK_ARGS ?= --trials 100
soak: $(STAMP) bytecode
	$(PY) tools/crash.py $(SOAK_ARGS)

# Fault injection (tools/faults.py; needs root: it mounts tmpfs and FUSE filesystems): the real
# daemon with its state dir full, EIO and EACCES on reads, a root unmounted mid-walk, the catalog
# locked by another process, SIGSTOP for 60 s; one table. `make faults FAULTS_ARGS="--only eio"`.
FAULTS_ARGS ?=
faults: $(STAMP) bytecode
	$(PY) tools/faults.py $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) .run demo bench/out
