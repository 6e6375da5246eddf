# stacklet on a fresh Debian 12 machine, as root:
#   make up     install what is missing, start stacklet (data in /var/lib/stacklet)
#   make test   install what is missing (with test extras), run the test suite
#   make bench  re-run every benchmark (bench/*.py) on the current code: figures with their
#               targets into bench/results/, and whether each was met (BENCH_ARGS=--quick:
#               few samples, results under $TMPDIR, to check that they run)
# All are idempotent.

VENV := .venv
BENCH_ARGS ?=

.PHONY: up test bench down status install install-test

up: install
	$(VENV)/bin/stacklet up

test: install-test
	$(VENV)/bin/python -m pytest -q tests

bench: install-test
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

down:
	$(VENV)/bin/stacklet down

status:
	$(VENV)/bin/stacklet status

install:
	scripts/install.sh clients

install-test:
	scripts/install.sh test
