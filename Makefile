# Short aliases only; the logic lives in the wheelfactory package.
RELEASE ?= 0.15.0-t4
# `make images` builds every release locked in the wheelhouse; e.g. IMAGES="-r tests/releases/ci.toml"
IMAGES ?= --all
PYTHON ?= python3

.PHONY: install plan build lock venv images test test-fast lint

install:
	$(PYTHON) -m pip install -e '.[test]'

plan:
	wheelfactory plan --release $(RELEASE)

build:
	wheelfactory build --release $(RELEASE)

lock:
	wheelfactory lock --release $(RELEASE)

images:
	wheelfactory images $(IMAGES)

test:
	$(PYTHON) -m pytest -v

test-fast:
	$(PYTHON) -m pytest -v -m "not slow"

lint:
	ruff check wheelfactory assemble recipes tests
