# The two commands: `make run` (the product, sandbox + SQLite + embedded store) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi:app
# `make run PORT=5050` serves there or stops if it is taken; without PORT, 5000 or the next free port
# (the choice is written down for `flask sandbox demo` and the mini-program: miniapp_server/devserver.py).
PORT ?=

.PHONY: run test test-python test-node fuzz bench bench-smoke clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

run: $(BIN)/.installed
	$(BIN)/flask db upgrade
	$(BIN)/flask products demo
	@port=$$($(BIN)/flask sandbox port $(if $(PORT),--port $(PORT))) && \
	  echo "serving the sandbox at http://127.0.0.1:$$port" && \
	  exec $(BIN)/flask run --host 127.0.0.1 --port $$port

test: test-python
	$(MAKE) test-node

test-python: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# The mini-program's own pages, run in Node against a live sandbox backend that the tests start with $(BIN)'s tools.
test-node: $(BIN)/.installed
	npm ci --no-audit --no-fund
	MINIAPP_PY_BIN=$(abspath $(BIN)) npm test

# Schemathesis over every operation of /api/openapi.json against gunicorn started for it (tests/fuzz/); CI runs it.
fuzz: $(BIN)/.installed
	$(BIN)/python tests/fuzz/run_schemathesis.py $(FUZZ_ARGS)

# Throughput, latency and scale against the framework's own ceilings (bench/README.md); needs wrk
# (apt-get install wrk), PostgreSQL and redis-server. bench-smoke: every scenario for a second, and a few
# requests of each through bench/inproc.py (CI).
bench: $(BIN)/.installed
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-smoke: $(BIN)/.installed
	$(BIN)/python bench/run.py --smoke $(BENCH_ARGS)
	$(BIN)/python bench/inproc.py --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache artifacts
