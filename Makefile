# The two commands of the README: `make up` runs the platform on embedded defaults (`make up ARGS="--web-port 8100"`
# passes options to `cmdlog up`), `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install up test test-fast test-clock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'

up: install
	$(BIN)/cmdlog up --demo $(ARGS)

# The checkers, configured in pyproject.toml: ruff (whole tree), mypy (production code), the import contracts.
# All three run even when one fails, so one run shows every problem. tests/unit/test_code_checks.py runs the same
# three, so `make test` and CI fail on a regression too.
.PHONY: lint
lint: install
	status=0; \
	$(BIN)/ruff check || status=1; \
	$(BIN)/mypy commandlog storage tasks flows deployments examples || status=1; \
	$(BIN)/lint-imports || status=1; \
	exit $$status

# The whole suite in TEST_WORKERS pytest-xdist processes (`make test TEST_WORKERS=0` runs it in one): each worker has
# its own embedded Postgres and Prefect test server (tests/conftest.py says why), and each test module runs on one
# worker (`--dist loadscope`: module-scoped fixtures are built once). pytest exits non-zero on any failure or error,
# and with 5 when no test was collected; the 20 slowest steps are listed at the end.
TEST_WORKERS ?= 3
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=20

# The developer's loop: unit + integration (real Postgres), no browser, no platform, no Prefect server; the tests
# marked `slow` are left to `make test`.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests/unit tests/integration

# The date-sensitive tests with the clock (and the test Postgres's clock) at 23:59:50 UTC on a month's and a year's
# last day (needs Debian's faketime); slow, so not part of `make test`.
test-clock: install
	PYTHON=$(BIN)/python tests/faketime.sh

clean:
	rm -rf .cmdlog .pytest_cache .hypothesis
