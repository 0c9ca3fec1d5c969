#!/usr/bin/env bash
# A separate venv with TRL 1.0.0, the last TRL release that has a PPOTrainer (trl.experimental.ppo), for
# bench/ppo.py's reference run. usage: bench/setup_trl_ppo.sh [VENV_DIR] (default /tmp/venv-trl-ppo)
set -euo pipefail
venv=${1:-/tmp/venv-trl-ppo}
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0  # the CPU wheel first, so that nothing pulls a CUDA build
"$venv/bin/pip" install -q trl==1.0.0 peft datasets accelerate gguf
"$venv/bin/python" -c "import trl; print('trl', trl.__version__, 'in', '$venv')"
