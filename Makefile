# The two commands a newcomer needs: `make demo` and `make test`. Both install what they use.
.PHONY: setup demo test lint bench stop clean

HOTLINE := .venv/bin/hotline

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	.venv/bin/ruff check --no-cache .
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check --no-cache .

bench: setup
	.venv/bin/python -m bench.route

# Calls per second and simultaneous bridged, recorded calls: `hotline serve` under sipp load.
.PHONY: bench-calls
bench-calls: setup
	.venv/bin/python -m bench.calls

# The console's queries on 1 000 000 calls and 200 000 callbacks (generated once, minutes; reused).
.PHONY: bench-console
bench-console: setup
	.venv/bin/python -m bench.console

.PHONY: bench-tasks
bench-tasks: setup
	.venv/bin/python -m bench.tasks

# Stop the embedded PostgreSQL and Redis that `make demo` started in .hotline/.
stop:
	@$(HOTLINE) services stop

clean: stop
	rm -rf .hotline
