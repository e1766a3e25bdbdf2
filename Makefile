# make demo: install, prepare Tiny Shakespeare, train dynActGLU at CPU size and print a sample.
# make test: install and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT := out/cpu/dynactglu-s1337

.PHONY: install demo test

install:
	VENV=$(VENV) bash scripts/install.sh

demo: install
	$(PY) data/prepare.py shakespeare_char
	$(PY) train.py config/dynactglu.py config/cpu.py --overwrite=True
	$(PY) sample.py --out_dir=$(DEMO_OUT) --start="ROMEO:" --num_samples=1 --max_new_tokens=400 --device=cpu

test: install
	$(PY) -m pytest -q
