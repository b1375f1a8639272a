#!/usr/bin/env bash
# One prepared check for a session that is lent a GPU (or TPU) machine through the device tool:
# the demo end to end in float32 and bfloat16, the training-step throughput of MobileNetV2 and
# ResNet50V2 at 224 px in float32 and bfloat16 (jaxmed only: Keras-TF's GPU build is not
# installed there), and compile times. Everything it measures goes to $OUT (or ./accelerator_out).
#
#   bash benchmarks/accelerator_check.sh            # ~10-14 min on one H100/H200
#
# Install first on that machine: pip install -e ".[test]" "jax[cuda12]" (TPU: "jax[tpu]").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-accelerator_out}
mkdir -p "$out"
python - <<'PY' | tee "$out/machine.json"
import json, jax, jaxlib, platform
print(json.dumps({"jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
                  "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}))
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia_smi.csv" 2>/dev/null || true
for dtype in float32 bfloat16; do
  /usr/bin/time -v python -m jaxmed.train --config demo --workdir "$out/demo-$dtype" \
    --config.model.dtype=$dtype > "$out/demo-$dtype.log" 2> "$out/demo-$dtype.time" || echo "demo $dtype failed"
  python -c "import json,sys; s=json.load(open('$out/demo-$dtype/summary.json')); \
print('$dtype', s['timings'], s['test']['accuracy'])" | tee -a "$out/demo_summary.txt" || true
done
python benchmarks/throughput.py --frameworks jaxmed,jaxmed-bf16 --models mobilenet_v2,resnet50v2 \
  --sizes 224 --phases finetune,frozen --json "$out/throughput.json" > "$out/throughput.log" 2>&1 \
  || echo "throughput failed (see $out/throughput.log)"
tail -n 12 "$out/throughput.log" || true
# Issue #17: the fixed costs (start-up, compiles, loop overhead, epoch boundaries) and the default
# steps per dispatch on this backend ('auto' = 8 off CPU) against K=1, 4, 16.
python benchmarks/fixed_costs.py --cases demo,lenet_32 --json "$out/fixed_costs.json" \
  > "$out/fixed_costs.log" 2>&1 || echo "fixed_costs failed (see $out/fixed_costs.log)"
python benchmarks/steps_per_dispatch.py --ks 1,4,8,16 --repeats 1 --json "$out/steps_per_dispatch.json" \
  > "$out/steps_per_dispatch.log" 2>&1 || echo "steps_per_dispatch failed"
tail -n 4 "$out/steps_per_dispatch.log" || true
