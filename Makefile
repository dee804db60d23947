.PHONY: demo test venv bench clean
VENV := .venv

venv:
	@bash scripts/bootstrap.sh

demo: venv
	$(VENV)/bin/tractatus-watch demo

test: venv
	@bash scripts/test.sh

bench: venv
	$(VENV)/bin/python bench/ingest.py
	$(VENV)/bin/python bench/queries.py

clean:
	rm -rf $(VENV) build *.egg-info
