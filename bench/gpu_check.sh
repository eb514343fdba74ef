#!/usr/bin/env bash
# The GPU check, one script for one GPU in under 8 minutes (issue 13, item 7):
#   1. the `gpu` tests: CUDA bf16 and fp16 (GradScaler) parity with fp32 for every family,
#      torch.compile, torchrun on the GPUs through NCCL (tests/integration/test_gpu.py);
#   2. bench/train.py at 256 px in bf16: images/s, peak memory and MFU per family against
#      the bf16 matmul peak measured in the same run.
#
#   bash bench/gpu_check.sh            # from anywhere; writes its log to ${OUT:-.}/gpu_check.log
#
# Python: the locked uv environment when uv is on PATH; otherwise (a machine with its own
# CUDA PyTorch and no network) `python3`, with any wheels under .whl/ installed first into a
# private target folder (pydantic and the other pure-Python dependencies torch images lack).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
log="${OUT:-.}/gpu_check.log"
if command -v uv >/dev/null 2>&1 && [ -z "${INPNET_NO_UV:-}" ]; then
  py=(uv run --locked python)
else
  py=(python3)
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/inpnet-site .whl/*.whl
    export PYTHONPATH="/tmp/inpnet-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "${py[@]}" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  start=$(date +%s)
  # -o addopts= drops the default `-m 'not gpu'`; -rs lists skips with their reasons
  timeout 330 "${py[@]}" -m pytest -q -rs -p no:cacheprovider -o addopts= -m gpu tests/ || echo "gpu tests: FAILED (rc $?)"
  echo "gpu tests took $(( $(date +%s) - start )) s"
  start=$(date +%s)
  timeout 150 "${py[@]}" bench/train.py --device cuda --precision bf16 --image-size 256 --batch-size 64 \
    --variants inpnet_s mae_s cmgan_s --steps 10 --warmup 3 || echo "bench/train.py: FAILED (rc $?)"
  echo "bench/train.py took $(( $(date +%s) - start )) s"
} 2>&1 | tee "$log"
