# The two set-up commands of the README: `make test` and `make demo`. Both create .venv if missing and install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install test demo docs bench bench-install study lint clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 lie on this machine's disk (timm needs a working torchvision).
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	# The docs extra (mkdocs) too: tests/test_docs.py builds the documentation site.
	$(PY) -m pip install --quiet -e ".[test,docs]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) recipes/quickstart.py

# Benchmarks (benchmarks/README.md). The peers and the plot are benchmark-only extras; torchattacks pins an old
# `requests`, so it is installed with --no-deps. Fashion-MNIST comes offline from the Debian package.
# `make bench BENCH_ARGS=--quick` is the smoke run.
bench: bench-install
	$(PY) benchmarks/step_overhead.py $(BENCH_ARGS)
	$(PY) benchmarks/compute_to_robustness.py $(BENCH_ARGS)
	$(PY) benchmarks/eval_throughput.py $(BENCH_ARGS)

bench-install: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m pip install --quiet --no-deps torchattacks
	dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
		{ [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO apt-get update -qq && $$SUDO apt-get install -y dataset-fashion-mnist; }

# Issue 12's study on EfficientNet-Lite0 (benchmarks/README.md, "AFT study"): the default rows take about 70 minutes on
# 2 cores. `make study STUDY_ARGS=--quick` is the smoke run; STUDY_ARGS takes any of the script's flags.
study: bench-install
	OMP_NUM_THREADS=1 $(PY) benchmarks/aft_study.py $(STUDY_ARGS)

# The documentation site (mkdocs.yml, docs/) into site/; --strict makes every warning an error. Offline: no web fonts,
# no plugin that downloads.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check hf_advft recipes tests benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache site
