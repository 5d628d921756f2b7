# Everything from a fresh machine: `make test` and `make demo` create the venv themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The torch pair verified on these machines (ENVIRONMENT.md): the CUDA build, also runs on CPU.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.ovseg-installed

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q test

demo: $(STAMP)
	$(VENV)/bin/ovseg segment assets/street.png --preset tiny \
	    --vocab "car; road [stuff]; person,pedestrian; building [stuff]; sky [stuff]; tree" \
	    --out out/demo --overlap-threshold 0.0
	@echo "demo outputs in out/demo (tiny preset has random weights: its labels are not meaningful)"

bench: $(STAMP)
	$(PY) bench/classifier.py

clean:
	rm -rf $(VENV) out
