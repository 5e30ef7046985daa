# Leukolab: `make run` serves the app on http://localhost:8000, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
FRONTEND_SOURCES := $(shell find frontend -path frontend/node_modules -prune -o -path frontend/dist -prune -o -type f -print 2>/dev/null)

.PHONY: run test install frontend models demo migrate serve clean help

help:
	@echo "make run   install, migrate, seed demo data, make sure a model exists, serve on localhost:8000"
	@echo "make test  the whole test suite"
	@echo "make serve serve what is installed, without the install and demo steps"

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the Python requirements into $(VENV) (torch from the local wheel index) ..."
	@set -o pipefail; $(PY) -m pip install --disable-pip-version-check -q -r requirements.txt 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@touch $@

frontend/dist/.built: $(FRONTEND_SOURCES)
	@if [ -f frontend/package.json ]; then \
		cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run build; \
	else echo "no frontend to build"; fi
	@mkdir -p frontend/dist && touch $@

install: $(VENV)/.installed frontend

frontend: frontend/dist/.built

migrate: $(VENV)/.installed
	$(PY) manage.py migrate --noinput

models: migrate
	$(PY) manage.py ensure_models

demo: models
	$(PY) manage.py seed_demo

run: install demo
	VENV=$(VENV) deploy/run.sh

serve:  # the app (and, with REDIS_URL, a worker and beat) as it is, without installing or seeding
	VENV=$(VENV) deploy/run.sh

test: install
	@if [ -f frontend/package.json ]; then cd frontend && npm test --silent; fi
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf frontend/dist var/static
