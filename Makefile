# The two commands a new user runs (see README):
#   make demo   set up what the demo uses, then run razard on a private systemd and show it healing
#   make test   set up what the tests use, then lint, type-check and run the whole test suite
#   make check  the edit loop (under 90 s): lint, type-check, unit tests and a fast slice
#   make deb    build/razar_<version>_amd64.deb (DEB_VERSION=0.1.1 to stamp another)
.PHONY: setup setup-demo demo test lint check unit deb
VENV := .venv/bin
# pytest-xdist: the integration tests mostly wait (on systemd, D-Bus, journald, razard's
# backoff), so more workers than this 2-core machine's cores pay off; a test file stays
# on one worker, so its module fixtures (a booted node, the bench run, etcd) run once
PYTEST_WORKERS ?= 3
XDIST = -n $(PYTEST_WORKERS) --dist loadfile
# make check's slice: unit tests, and razarctl against the control interface on a real bus
CHECK_TESTS ?= tests/unit tests/integration/test_control.py

# what the tests use (more than the demo: see scripts/setup.sh)
setup:
	@scripts/setup.sh test

# only what the demo uses: systemd, dbus, dbus-user-session, razar's runtime dependencies
setup-demo:
	@scripts/setup.sh demo

demo: setup-demo
	$(VENV)/razard demo $(DEMO_ARGS)

# tests/ and bench/ too: a fake that drifts from the Protocol it stands in for fails here
lint: setup
	$(VENV)/ruff check razard agents scripts tests bench
	$(VENV)/ruff format --check razard agents scripts tests bench
	$(VENV)/mypy --strict razard agents tests bench

# every test: unit, integration, e2e (make demo), system (a booted Debian node), bench smoke
test: lint
	$(VENV)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

# the same lint (mypy's cache, .mypy_cache, makes it incremental), then the slice
check: lint
	$(VENV)/python -m pytest -q $(XDIST) $(CHECK_TESTS) $(PYTEST_ARGS)

unit: setup
	$(VENV)/python -m pytest -q tests/unit

deb:
	@scripts/build_deb.sh $(if $(DEB_VERSION),--version $(DEB_VERSION))
