# The two commands of the quick start: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATABASE ?= sqlite:///enjournal.db

.PHONY: serve test install install-test browser bench clean pg-stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: $(VENV)/.installed
	$(BIN)/enjournal demo --database $(DATABASE) --if-empty
	$(BIN)/enjournal serve --host $(HOST) --port $(PORT) --database $(DATABASE)

# the browser tests (tests/browser) drive Debian's chromium through Playwright, which cannot
# download browsers of its own here: install the Debian package where it is missing
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium for the browser tests (apt-get)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) || { echo "no chromium at $(CHROMIUM)"; exit 1; }

# the suite runs every server-level test on SQLite and on a private PostgreSQL cluster
# (tests/pgcluster.py: .pgtest/, left running for fast reruns; `make pg-stop` stops it)
test: $(VENV)/.installed-test browser
	ENJOURNAL_TEST_PG=$$($(BIN)/python -m tests.pgcluster start) && export ENJOURNAL_TEST_PG && \
	ENJOURNAL_CHROMIUM=$(CHROMIUM) \
	$(BIN)/python -m pytest -n 2 --dist loadfile

# tests/pgcluster.py needs only the standard library: no virtualenv to stop the cluster
pg-stop:
	$(PYTHON) -m tests.pgcluster stop

bench: $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
