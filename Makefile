# Two entry points do all set-up on a fresh machine:
#   make workbook   run every notebook with its defaults (synthetic data, CPU) via papermill: the
#                   quick run; unchanged notebooks are skipped and finished runs reused
#   make test       the whole test suite, notebooks included (pytest --nbval-lax)
# Options of `jlml workbook` go through ARGS: make workbook ARGS=--full (the heavy studies too),
# make workbook ARGS=--fresh (execute everything and train every run anew)
PYTHON ?= python3
# the torch releases installed here; pyproject.toml only sets a floor (GPU machines run 2.11)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test workbook clean book browser-test

venv: $(STAMP)

# pip at -qq: errors only. Its warnings here are about the machine's own pip configuration (e.g.
# find-links folders that do not exist), nothing the project or its user acts on.
PIP := $(BIN)/python -m pip install -qq

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(TORCH_PINS)
# (setuptools' build backend warns that an editable install may be shadowed by a same-named folder:
# it is how an editable install works; silenced so the first command prints no tool warning)
	PYTHONWARNINGS=ignore::UserWarning $(PIP) -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (jlml)" >/dev/null
# (no "get notified about official Jupyter news?" pop-up in this environment's JupyterLab)
	$(BIN)/jupyter labextension disable --level=sys_prefix @jupyterlab/apputils-extension:announcements >/dev/null 2>&1
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval-lax notebooks/

ARGS ?=
workbook: venv
	$(BIN)/jlml workbook $(ARGS)

# the executed notebooks (results/executed/), tables and runs as a static site: build/book/html/index.html
book: venv
	$(BIN)/jlml book

# JupyterLab and the built book in headless Chromium (Debian's chromium + chromium-driver; installed
# here when root, named otherwise). The test executes the notebooks it shows and builds its own book.
CHROMIUM     ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
browser-test: venv
	@missing=""; for f in $(CHROMIUM) $(CHROMEDRIVER); do test -x $$f || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "browser-test: installing Debian's chromium and chromium-driver (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "browser-test: missing$$missing. Install the browser and its driver (Debian/Ubuntu:" \
	         "sudo apt-get install chromium chromium-driver) or point CHROMIUM=... CHROMEDRIVER=... at them." >&2; \
	    exit 1; \
	  fi; \
	fi
	JLML_CHROMIUM=$(CHROMIUM) JLML_CHROMEDRIVER=$(CHROMEDRIVER) $(BIN)/python -m pytest -m browser tests/test_browser.py

clean:
	rm -rf $(VENV) results/executed .pytest_cache
