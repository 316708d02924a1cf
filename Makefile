# Two entry points: `make dashboard` and `make test`. Both create .venv and install into it.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
PORT   ?= 8501

# requirements.txt: relex and its dashboard at the tested pins; requirements-dev.txt adds every
# other extra (eval, ray, tensorboard) and the test tools, so that `make test` covers them all.
$(VENV)/.runtime: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PYTHON) -m pip install -q -r requirements-dev.txt
	touch $@

# Headless Chromium for the browser test (Debian's package; needs root or sudo).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

dashboard: $(VENV)/.runtime
	$(PYTHON) -m streamlit run relex_dashboard/app.py --server.port $(PORT)

test: $(VENV)/.dev chromium
	$(PYTHON) -m pytest -q

.PHONY: chromium dashboard test
