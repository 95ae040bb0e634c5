# Two entry points do all set-up on a fresh machine:
#   make workbook   run every notebook with its defaults (synthetic data, CPU) via papermill
#   make test       the whole test suite, notebooks included (pytest --nbval-lax)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test workbook clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (jlml)" >/dev/null
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval-lax notebooks/

workbook: venv
	$(BIN)/jlml workbook

clean:
	rm -rf $(VENV) results/executed .pytest_cache
