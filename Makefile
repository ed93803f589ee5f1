# Every command a person runs. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast test-browser lint format migrate superuser env clean backup restore audit lock

# Every package comes from a lock with its hashes (`make lock` writes them from pyproject.toml):
# requirements.lock is what the site needs to run (the Dockerfile installs only that),
# requirements-test.lock adds the test tools and the build backend, requirements-bench.lock the
# bench's plot. The project itself goes in last, without dependencies and built by the locked
# setuptools, so nothing outside a lock is installed.
PIP_VERSION := 26.3
define install-locked
	$(BIN)/pip install --quiet --require-hashes -r $(1)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
endef

# What running needs (`make run`, `migrate`, `superuser`): requirements.lock, the build backend
# alone (its pinned, hashed lines from requirements-test.lock) and the project, whose install
# makes `$(BIN)/chat-client`. No test tools.
INSTALLED_RUN := $(VENV)/.installed-run
# Plus the test and lint tools (`make test`, `lint`, `format`, `audit`, `bench`; CI).
INSTALLED_TEST := $(VENV)/.installed-test

$(INSTALLED_RUN): pyproject.toml requirements.lock requirements-test.lock
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==$(PIP_VERSION)
	sed -n '/^setuptools==/,/^    # via/p' requirements-test.lock > $(VENV)/build-backend.lock
	$(BIN)/pip install --quiet --require-hashes -r $(VENV)/build-backend.lock
	$(call install-locked,requirements.lock)
	@touch $@

$(INSTALLED_TEST): $(INSTALLED_RUN) requirements-test.lock
	$(call install-locked,requirements-test.lock)
	@touch $@

# Writes the locks again from pyproject.toml, keeping every pin that still fits; then commit them.
# LOCK_ARGS=--upgrade moves everything to the newest versions, LOCK_ARGS="-P twisted" one package.
# pip-tools runs in a virtualenv of its own, so it never changes what the tests run on.
LOCK_VENV ?= .venv-lock
LOCK_FLAGS = --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links --no-emit-trusted-host $(LOCK_ARGS)
lock: export CUSTOM_COMPILE_COMMAND = make lock
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) \
	    && $(LOCK_VENV)/bin/pip install --quiet pip==$(PIP_VERSION) pip-tools==7.6.2; }
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) -o requirements.lock pyproject.toml
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) -c requirements.lock --extra test \
	    --build-deps-for editable -o requirements-test.lock pyproject.toml
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) -c requirements-test.lock --extra test \
	    --extra bench --build-deps-for editable -o requirements-bench.lock pyproject.toml

# The site on http://$(HOST):$(PORT) (`make run PORT=8080 HOST=0.0.0.0`): SQLite, one process,
# the in-memory channel layer unless REDIS_URL is set (the lobby's online counts need Redis).
run: export DJANGO_DEBUG ?= 1
run: $(INSTALLED_RUN)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python -m chatsite.serve -b $(HOST) -p $(PORT)

migrate: export DJANGO_DEBUG ?= 1
migrate: $(INSTALLED_RUN)
	$(BIN)/python manage.py migrate --noinput

superuser: export DJANGO_DEBUG ?= 1
superuser: $(INSTALLED_RUN)
	$(BIN)/python manage.py createsuperuser

# All the tests: real Redis, real daphne processes, real Chromium. Browser tests run in their
# own pytest process (Playwright's event loop must not meet pytest-asyncio's).
test: export DJANGO_SECRET_KEY ?= $(shell $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(40))')
test: $(INSTALLED_TEST)
	$(BIN)/pytest -m "not browser" $(PYTEST_ARGS)
	$(BIN)/pytest -m browser $(PYTEST_ARGS)

lint: $(INSTALLED_TEST)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(INSTALLED_TEST)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# A .env for `docker compose up`: .env.example with fresh random secrets (never overwrites .env).
env:
	@test ! -e .env || { echo ".env exists: edit it, or remove it to write a new one"; exit 1; }
	@secret() { python3 -c "import secrets; print(secrets.token_urlsafe($$1))"; }; \
	db=$$(secret 24); umask 077; \
	sed -e "s|^DJANGO_SECRET_KEY=.*|DJANGO_SECRET_KEY=$$(secret 50)|" \
	    -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$$db|" \
	    -e "s|chat:POSTGRES_PASSWORD@|chat:$$db@|" \
	    -e "s|^DJANGO_SUPERUSER_PASSWORD=.*|DJANGO_SUPERUSER_PASSWORD=$$(secret 18)|" \
	    .env.example > .env
	@echo "Wrote .env with random secrets. The admin's password: grep DJANGO_SUPERUSER_PASSWORD .env"

# Backups (deploy/backup.sh, deploy/restore.sh): the compose stack's PostgreSQL, or DATABASE_URL's.
backup:
	@deploy/backup.sh

restore:
	@deploy/restore.sh "$(FILE)"

# Known vulnerabilities in the installed dependencies (pip-audit, installed into the venv on first
# use). Needs the network: PyPI's JSON API holds the vulnerability data. --strict: a package that
# could not be looked up fails the audit (without it, an offline run reports "No known
# vulnerabilities found" having checked nothing). The project itself is not on PyPI: skipped.
audit: $(INSTALLED_TEST)
	@test -x $(BIN)/pip-audit || $(BIN)/pip install --quiet pip-audit
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off

clean:
	rm -rf $(VENV) $(LOCK_VENV) staticfiles test-db.sqlite3*

# First the render benchmark (issue 17, bench/render.py: one 4,000-character message, a few
# seconds), then the fan-out benchmark (issue 9), then search (issue 18, bench/search.py: 1,000,000
# messages on the PostgreSQL in DATABASE_URL, about 5 minutes; skipped without one): ours, the
# tutorial consumer and a raw websockets server through
# scenarios A-E, M, N (the inbox), S (reconnect storm) and I (idle capacity), more than 20 minutes
# on 2 cores; writes docs/performance.md and docs/performance.png.
# Ours runs on the PostgreSQL in DATABASE_URL (a database of its own, dropped after), else on a
# temporary SQLite file. BENCH_ARGS="--scenarios A,C" runs a subset.
.PHONY: bench
bench: $(INSTALLED_TEST)
	$(call install-locked,requirements-bench.lock)
	$(BIN)/python -m bench.render
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.search --docs docs --json bench/results/search.json
