# The two commands a new user runs (see README):
#   make demo   set up what the demo uses, then run razard on a private systemd and show it healing
#   make test   set up what the tests use, then lint, type-check and run the whole test suite
#   make deb    build/razar_<version>_amd64.deb (DEB_VERSION=0.1.1 to stamp another)
.PHONY: setup setup-demo demo test lint unit deb
VENV := .venv/bin

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

test: lint
	$(VENV)/python -m pytest -q $(PYTEST_ARGS)

unit: setup
	$(VENV)/python -m pytest -q tests/unit

deb:
	@scripts/build_deb.sh $(if $(DEB_VERSION),--version $(DEB_VERSION))
