# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CONFIG ?= conf/config.example.yml
PANEL_CONFIG ?= conf/devpanel.yml
PANEL_LISTEN ?= tcp:8081:interface=127.0.0.1

.PHONY: run test venv install test-deps typecheck bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

venv: $(VENV)/bin/python

# A plain (non-editable) install: the twistd dropin must be found the way a
# deployment finds it.
install: venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet .
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

# The daemon in the foreground on the embedded defaults, with the bundled
# development panel beside it.  Ctrl-C stops both.
run: install
	@mkdir -p var
	@$(PY) -m wings_twisted.devpanel serve --config $(PANEL_CONFIG) --listen $(PANEL_LISTEN) \
		> var/devpanel.log 2>&1 & echo $$! > var/devpanel.pid; \
	trap 'kill $$(cat var/devpanel.pid) 2>/dev/null' EXIT INT TERM; \
	for i in 1 2 3 4 5 6 7 8 9 10; do \
		$(PY) -c "import socket; socket.create_connection(('127.0.0.1', 8081), 1)" 2>/dev/null && break; sleep 0.5; \
	done; \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/twistd --pidfile= -n wings --config $(CONFIG)

# Checkers are pinned: a new release must not turn a landed tree red.
test-deps: install
	$(PIP) install --quiet "hypothesis>=6.100" "paramiko>=3.4" "mypy==2.4.1" "mypy-zope==1.0.17" \
		"types-PyYAML==6.0.12.20261122"

typecheck: test-deps
	$(VENV)/bin/mypy wings_twisted

test: typecheck
	$(PY) -m twisted.trial tests

bench: install
	$(PY) bench/run.py

clean:
	rm -rf build *.egg-info _trial_temp .hypothesis var
