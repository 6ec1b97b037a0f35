# Quick start: `make demo` and `make test` on a fresh Debian machine with Python 3.11 or newer.
# Both create .venv, install the pinned CPU build of torch first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then this project.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
# Qt 6 under a virtual X server, for the napari plugin tests
APT_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxcb-shape0 \
	libxcb-randr0 libxcb-render-util0 libxcb-image0 libxkbcommon-x11-0 libegl1 libgl1 libglib2.0-0 \
	libdbus-1-3 libfontconfig1
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
OUT    := outputs

.PHONY: setup demo test apt bench clean

$(VENV)/.installed-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

setup: $(VENV)/.installed-napari,dev

apt:
	@if command -v xvfb-run >/dev/null 2>&1 && [ -z "$(FORCE_APT)" ]; then echo "apt packages present"; \
	else $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); fi

demo: $(VENV)/.installed-bench
	$(VENV)/bin/medinr fit sample_scans/t1_coronal_slice.nii.gz --out $(OUT)/fit --force
	$(VENV)/bin/medinr register sample_scans/mni152_t1_2mm.nii.gz sample_scans/mni152_t1_1mm.nii.gz --out $(OUT)/register \
		--fixed-labels sample_scans/mni152_labels_2mm.nii.gz --moving-labels sample_scans/mni152_labels_2mm.nii.gz --force

test: apt setup
	xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) -m pytest -q

bench: $(VENV)/.installed-bench
	$(PY) bench/models.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
