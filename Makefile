# stacklet on a fresh Debian 12 machine, as root:
#   make up     install what is missing, start stacklet (data in /var/lib/stacklet)
#   make test   install what is missing (with test extras), run the test suite
# Both are idempotent.

VENV := .venv

.PHONY: up test down status install install-test

up: install
	$(VENV)/bin/stacklet up

test: install-test
	$(VENV)/bin/python -m pytest -q tests

down:
	$(VENV)/bin/stacklet down

status:
	$(VENV)/bin/stacklet status

install:
	scripts/install.sh clients

install-test:
	scripts/install.sh test
