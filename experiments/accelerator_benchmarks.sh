#!/usr/bin/env bash
# Issue 6's benchmarks on a machine with an accelerator, in one go, within a time budget:
#
#   bash experiments/accelerator_benchmarks.sh WORKDIR [REFERENCE_PYTHON] [SECONDS]
#
# 1. WORKDIR/speed: `bench_speed`'s four cases (ConvNet B=1, B=4, ResNet-18 B=4, FedAvg
#    4 local steps), jaxinvert against breaching 0.1.2 and plain PyTorch in the same run
#    (REFERENCE_PYTHON: a Python with torch + breaching; '' = jaxinvert alone).
# 2. WORKDIR/scaling: `bench_scaling`, restart-iterations/s against restarts per device
#    (and against devices where there are several), `throughput_vs_restarts.png`.
# 3. WORKDIR/restarts: `bench_restarts`, one copy of step 2's attack under each strategy
#    (host loop, vmap, vmap with 10 steps per call, sharded with 10), which of them
#    costs what the one-copy point of step 2 pays.
# 4. WORKDIR/quality: time to breaching's PSNR on QUALITY_CASE (default ConvNet B=1). breaching's
#    default attack gets its default 24,000 iterations, or, when the SECONDS left (default
#    3600) cannot hold that, the largest whole thousand that fits, estimated from
#    breaching's its/s measured in step 1; jaxinvert gets at most half of breaching's time
#    (`quality_max_factor=0.5`). The budget used is `config.reference_iterations` in
#    WORKDIR/quality/results.json, and is printed.
#
# Measured on one H100 (jax 0.11.2, a fresh machine): compilation dominates, about 90 s
# per `bench_speed` case with its two PyTorch references and 50 s per restarts-per-device
# value of `bench_scaling`; 530 s got through three and a half cases and two values
# (docs/speed.md, "On a GPU"). By those figures and breaching's 23.3 ms per step there, all four
# steps with breaching's full 24,000 iterations need about 1800 s (an estimate, not a
# run); or run the steps' commands one by one. Measured on one H200 (commit a0a0e9b, a
# fresh machine, docs/speed.md "Fourth lease"): step 4 alone at the full 24,000 iterations
# took 714 s (breaching's attack 587 s, jaxinvert 26.5 s, the rest start-up and the case's
# speed timing), step 3 alone 73 s.
#
# PYTHON (default: python) runs jaxinvert; BENCH_FLAGS, extra --config.* flags appended to
# every step (a smaller model for a smoke run, say); STEPS, the steps to run (default
# "speed,scaling,restarts,quality"); QUALITY_ITERATIONS, breaching's budget in step 4
# instead of sizing it from step 1 (needed when step 1 is not run); QUALITY_CASE, step 4's
# case as `name:overrides` (default "convnet_b1:batch_size=1"; sizing from step 1 reads
# breaching's its/s of that name). Each step writes its
# results.json as it goes, so a step cut short keeps what it measured.
set -u
workdir=${1:?usage: accelerator_benchmarks.sh WORKDIR [REFERENCE_PYTHON] [SECONDS]}
reference=${2:-}
budget=${3:-3600}
python=${PYTHON:-python}
BENCH_FLAGS=${BENCH_FLAGS:-}
steps=",${STEPS:-speed,scaling,restarts,quality},"
quality_case=${QUALITY_CASE:-convnet_b1:batch_size=1}
quality_name=${quality_case%%:*}
want() { [[ $steps == *",$1,"* ]]; }
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
mkdir -p "$workdir"

if want speed; then
echo "== 1. bench_speed (seconds left: $(left))"
timeout $(( $(left) * 6 / 10 )) "$python" -m experiments.bench_speed \
    --workdir="$workdir/speed" --config.reference_python="$reference" \
    --config.timed_steps=50 --config.warmup=5 --config.matmul_size=8192 \
    --config.progress=False $BENCH_FLAGS || echo "bench_speed failed or was cut (rc $?)"
fi

if want scaling; then
echo "== 2. bench_scaling (seconds left: $(left))"
timeout $(( $(left) * 5 / 10 )) "$python" -m experiments.bench_scaling \
    --workdir="$workdir/scaling" --config.restarts_per_device=1,4,16,64,256 \
    --config.progress=False $BENCH_FLAGS || echo "bench_scaling failed or was cut (rc $?)"
fi

if want restarts; then
echo "== 3. bench_restarts, one copy of the scaling step per strategy (seconds left: $(left))"
timeout $(( $(left) * 3 / 10 )) "$python" -m experiments.bench_restarts \
    --workdir="$workdir/restarts" --config.width=64 --config.batch_size=4 \
    --config.restarts=1 --config.conv_impls=matmul_dw \
    --config.variants=host_loop,vmap,vmap:10,sharded:10 --config.iterations=20 \
    --config.warmup=2 --config.progress=False $BENCH_FLAGS \
    || echo "bench_restarts failed or was cut (rc $?)"
fi

want quality && [ -n "$reference" ] || exit 0
if [ -n "${QUALITY_ITERATIONS:-}" ]; then
  its="(not sized)"
  iterations=$QUALITY_ITERATIONS
else
  # breaching's its/s from step 1 (its time-stamped steps), to size its default attack.
  its=$("$python" -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(r.get('breaching_its_per_s_' + sys.argv[2]) or 0)" "$workdir/speed/results.json" \
    "$quality_name" 2>/dev/null)
  # jaxinvert may take half of breaching's time; keep 90 s for start-up and writing, and
  # 10 % for breaching's snapshots.
  iterations=$("$python" -c "import sys; its, left = float(sys.argv[1]), float(sys.argv[2]); \
n = int(its * (left - 90) / 1.5 / 1.1 / 1000) * 1000; print(min(24000, n))" "${its:-0}" "$(left)")
fi
echo "== 4. time to breaching's PSNR, $quality_name: breaching $its it/s, $(left) s left," \
     "breaching's default attack for $iterations iterations"
if [ "$iterations" -lt 1 ] || { [ -z "${QUALITY_ITERATIONS:-}" ] && [ "$iterations" -lt 1000 ]; }; then
  echo "too little time left for step 4"; exit 0
fi
timeout $(( $(left) - 10 )) "$python" -m experiments.bench_speed \
    --workdir="$workdir/quality" --config.reference_python="$reference" \
    --config.cases="$quality_case" --config.quality_cases="$quality_name" \
    --config.reference_iterations="$iterations" --config.quality_max_factor=0.5 \
    --config.timed_steps=50 --config.warmup=5 --config.matmul_size=8192 \
    --config.log_every=50 --config.progress=False $BENCH_FLAGS || echo "step 4 failed or was cut (rc $?)"
