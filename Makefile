# Two entry points for a fresh machine: `make run` and `make test`.
# Every recipe quotes its paths: a checkout path may contain spaces.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The tested set of every dependency (see setup.py); `make constraints` renews it.
CONSTRAINTS ?= constraints.txt
CONFIG ?= conf/config.example.yml
PANEL_CONFIG ?= conf/devpanel.yml
# Must match conf/devpanel.yml's node.url and the example config's remote.
PANEL_PORT ?= 8081

.PHONY: run run-node2 test venv install test-deps typecheck constraints bench clean

$(VENV)/bin/python:
	"$(PYTHON)" -m venv "$(VENV)"

venv: $(VENV)/bin/python

# A plain (non-editable) install: the twistd dropin must be found the way a
# deployment finds it.
install: venv
	"$(PIP)" install --quiet --upgrade pip
	"$(PIP)" install --quiet -c "$(CONSTRAINTS)" .
	"$(PY)" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

# The daemon in the foreground (`wings`) on the example configuration, with
# the bundled development panel beside it.  Ctrl-C stops both.  A port taken
# by another program and a panel that does not start end the run with the
# reason on the console.
run: install
	@mkdir -p var
	@if "$(PY)" -c "import socket, sys; sys.exit(socket.socket().connect_ex(('127.0.0.1', $(PANEL_PORT))) != 0)"; then \
		echo "make run: 127.0.0.1:$(PANEL_PORT) is already taken by another program; stop it first." >&2; \
		exit 1; \
	fi
	@"$(PY)" -m wings_twisted.devpanel serve --config "$(PANEL_CONFIG)" \
		--listen "tcp:$(PANEL_PORT):interface=127.0.0.1" > var/devpanel.log 2>&1 & \
	panel=$$!; \
	trap 'kill $$panel 2>/dev/null' EXIT INT TERM; \
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
		kill -0 $$panel 2>/dev/null || break; \
		"$(PY)" -c "import socket; socket.create_connection(('127.0.0.1', $(PANEL_PORT)), 1)" 2>/dev/null && break; \
		sleep 0.5; \
	done; \
	if ! kill -0 $$panel 2>/dev/null; then \
		echo "make run: the development panel did not start (var/devpanel.log):" >&2; \
		cat var/devpanel.log >&2; \
		exit 1; \
	fi; \
	echo "make run: development panel on http://127.0.0.1:$(PANEL_PORT) (log: var/devpanel.log)"; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" "$(VENV)/bin/wings" --config "$(CONFIG)"

# A second node beside `make run` (in another terminal), to try transfers:
# python -m wings_twisted.devpanel transfer --server <uuid> --to node2.
run-node2: install
	@mkdir -p var/node2
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" "$(VENV)/bin/wings" --config conf/config.node2.example.yml

# Checkers are pinned: a new release must not turn a landed tree red.
test-deps: install
	"$(PIP)" install --quiet -c "$(CONSTRAINTS)" ".[test]" "mypy==2.4.1" \
		"mypy-zope==1.0.17" "types-PyYAML==6.0.12.20261122"

typecheck: test-deps
	"$(VENV)/bin/mypy" wings_twisted

test: typecheck
	"$(PY)" -m twisted.trial tests

# Renew constraints.txt from the virtualenv the tests just passed in.
constraints: test-deps
	{ sed -n '/^#/p' "$(CONSTRAINTS)"; "$(PIP)" freeze --exclude-editable | grep -v '^wings-twisted'; } \
		> "$(CONSTRAINTS).new" && mv "$(CONSTRAINTS).new" "$(CONSTRAINTS)"

bench: install
	"$(PY)" bench/run.py

clean:
	rm -rf build *.egg-info _trial_temp .hypothesis var
