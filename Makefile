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
MEDINR := $(VENV)/bin/medinr

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

demo: $(VENV)/.installed-dev
	@echo "== 1/5 fit an INR to a real coronal T1 slice"
	$(MEDINR) fit sample_scans/t1_coronal_slice.nii.gz --out $(OUT)/fit --force
	@echo "== 2/5 reconstruct 4x undersampled 8-coil k-space simulated from that slice (noise at 30 dB SNR, ESPIRiT maps)"
	$(MEDINR) reconstruct sample_scans/t1_coronal_slice.nii.gz --accel 4 --coils 8 --snr 30 --maps espirit \
		--out $(OUT)/reconstruct --force
	@echo "== 3/5 reconstruct measured 2-coil GRE k-space (3T), retrospectively undersampled 3x"
	$(MEDINR) reconstruct sample_scans/gre_2coil_kspace.npy --accel 3 --center-fraction 0.12 \
		--out $(OUT)/reconstruct_raw --force
	@echo "== 4/5 register the MNI T1 to a copy warped by a known smooth deformation (up to 5 mm), with GM/WM labels"
	$(MEDINR) register sample_scans/mni152_t1_2mm.nii.gz sample_scans/mni152_t1_2mm_warped.nii.gz --out $(OUT)/register \
		--fixed-labels sample_scans/mni152_labels_2mm.nii.gz --moving-labels sample_scans/mni152_labels_2mm_warped.nii.gz --force
	@echo "== 5/5 render an oblique plane of the continuous MNI volume at 3x zoom, as PNG and as NIfTI"
	$(MEDINR) render napari_plugin/data/mni152_t1_2mm_v2.inr --plane 1,1,0 --zoom 3 --out $(OUT)/render/oblique.png --force
	$(MEDINR) render napari_plugin/data/mni152_t1_2mm_v2.inr --plane 1,1,0 --zoom 3 --out $(OUT)/render/oblique.nii.gz --force
	@echo "Results are in $(OUT)/ (each folder holds its metrics.json and a report PNG)."

test: apt setup
	xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) -m pytest -q

# Benchmarks take tens of minutes; run them on an otherwise idle machine (2 busy threads slow torch down badly).
bench: $(VENV)/.installed-bench
	$(PY) bench/speed.py
	$(PY) bench/models.py
	$(PY) bench/recon.py
	$(PY) bench/register.py
	$(PY) bench/nufft.py
	xvfb-run -a -s "-screen 0 1920x1200x24" $(PY) bench/render.py
	$(PY) bench/batch.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
