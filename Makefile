# The two commands of the quick start: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATABASE ?= sqlite:///enjournal.db

.PHONY: serve test install install-test bench clean pg-stop

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

# the suite runs every server-level test on SQLite and on a private PostgreSQL cluster
# (tests/pgcluster.py: .pgtest/, left running for fast reruns; `make pg-stop` stops it)
test: $(VENV)/.installed-test
	ENJOURNAL_TEST_PG=$$($(BIN)/python -m tests.pgcluster start) && export ENJOURNAL_TEST_PG && \
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
