# fashionrec: `make run` (install, ingest the bundled data, evaluate, print the table) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/online-retail
BUILD ?= build
NAME := $(notdir $(abspath $(DATA)))
MODELS ?= popular,decay,repurchase,segments,itemcf,content,als,bpr,usercf,ranker
TEST_DAYS ?= 7
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test lint bench readme clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "fashionrec needs Python 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

# The models `make run` publishes for the web page; the first one serves (the page's model menu
# switches to the others: `repurchase` also reacts at once to purchases posted on the page).
SERVE_MODELS ?= ranker repurchase decay popular segments itemcf content als
HOST ?= 127.0.0.1
PORT ?= 8000
OUT := $(BUILD)/$(NAME)

run: install
	$(BIN)/fashionrec ingest $(DATA) --out $(OUT)/dataset
	$(BIN)/fashionrec evaluate $(OUT)/dataset --split week --test-days $(TEST_DAYS) \
		--models $(MODELS) --k 12 --json $(OUT)/results.json
	rm -rf $(OUT)/registry
	@set -e; first=1; for m in $(SERVE_MODELS); do \
		$(BIN)/fashionrec -q fit $$m $(OUT)/dataset --registry $(OUT)/registry \
			$$( [ $$first = 1 ] && echo --serve ); first=0; \
	done
	$(BIN)/fashionrec serve $(OUT)/registry --dataset $(OUT)/dataset --store $(OUT)/feedback.sqlite3 \
		--host $(HOST) --port $(PORT)

# Debian's Chromium and ChromeDriver for the browser test (skipped with a reason without them).
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; \
	  else echo "no chromium/chromedriver and no root apt-get: the browser test will skip"; fi; \
	fi

test: install system-deps
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

bench: install
	$(BIN)/python benchmarks/metrics_bench.py

# Results of the longer benchmarks (benchmarks/*.py write them), drawn into the README as they are.
BENCH_RESULTS := $(addprefix benchmarks/results/,ranker.json beauty.json sequence_thesis.json \
	issue6.json)

# Regenerate the README results table from a fresh run on the bundled data (never typed by hand).
readme: install
	$(BIN)/fashionrec ingest data/online-retail --out $(BUILD)/online-retail/dataset
	$(BIN)/fashionrec -q evaluate $(BUILD)/online-retail/dataset --split week --test-days 7 \
		--models $(MODELS) --k 12 --json benchmarks/results/online_retail_week.json
	$(BIN)/fashionrec -q evaluate $(BUILD)/online-retail/dataset --split week --test-days 7 \
		--folds 4 --models $(MODELS) --k 12 --json benchmarks/results/online_retail_backtest.json
	$(BIN)/python tools/readme_results.py README.md benchmarks/results/online_retail_week.json \
		benchmarks/results/online_retail_backtest.json $(BENCH_RESULTS)

clean:
	rm -rf $(BUILD) .pytest_cache
