# The two commands a new user types:  make demo   and   make test
# Each creates .venv when missing, installs the CPU torch first (TORCH_SPEC), then
# the package with its extras, then does its job. A second run reuses the venv.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= ray,dashboard,data,postgres,dev,docs
STAMP      := $(VENV)/.taskgraph-installed
BIN        := $(VENV)/bin

# Ray on loopback with no network (see docs/architecture.md)
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_TMPDIR ?= /tmp/taskgraph-ray
export TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S ?= 0
export PYTHONDONTWRITEBYTECODE ?= 1

.PHONY: demo test lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $(STAMP)

# The main job on embedded defaults: a local Ray, a SQLite study under runs/quickstart/.
# --resume makes a second `make demo` reuse the finished study instead of failing.
demo: $(STAMP)
	@mkdir -p $(RAY_TMPDIR)
	$(BIN)/taskgraph run studies/quickstart.toml --resume
	$(BIN)/taskgraph report runs/quickstart/study.db
	@echo "Review the study in optuna-dashboard:  $(BIN)/taskgraph dashboard runs/quickstart/study.db"
	@echo "then open http://127.0.0.1:8080"

# mypy reads its files and strictness from pyproject.toml ([tool.mypy]), coverage its sources, its
# subprocess measurement and its floor ([tool.coverage.*]): the suite runs under `coverage run`, every
# Python subprocess it starts (the CLI, the pytest-xdist workers) writes its own data file, and the report fails
# under the floor. TEST_WORKERS pytest-xdist workers (--dist loadgroup: the Ray tests run one after another on one
# of them, tests/conftest.py); TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	@mkdir -p $(RAY_TMPDIR)
	$(BIN)/ruff check taskgraph tests benchmarks
	$(BIN)/mypy
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -n $(TEST_WORKERS) --dist loadgroup
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

lint: $(STAMP)
	$(BIN)/ruff check taskgraph tests benchmarks
	$(BIN)/mypy

clean-venv:
	rm -rf $(VENV)
