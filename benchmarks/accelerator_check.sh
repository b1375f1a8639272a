#!/usr/bin/env bash
# One prepared check for a session that is lent a GPU (or TPU) machine through the device tool:
# the demo end to end in float32 and bfloat16, the training-step throughput of MobileNetV2 and
# ResNet50V2 at 224 px in float32 and bfloat16 (jaxmed only: Keras-TF's GPU build is not
# installed there), and compile times. Everything it measures goes to $OUT (or ./accelerator_out).
#
#   bash benchmarks/accelerator_check.sh            # ~5-8 min on one H100/H200
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
