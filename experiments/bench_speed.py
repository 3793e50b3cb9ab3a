"""Attack-step throughput per case, against this machine's matmul limit, in one run.

  python -m experiments.bench_speed --workdir=workdirs/bench_speed

For every case of `experiments/configs/bench_speed.py` it builds the attack exactly
as `experiments.reconstruct` does, compiles one restart's step, and reports:
``jaxinvert_its_per_s`` (steady-state restart-iterations per second),
``flops_per_step`` (XLA's compiled cost analysis), ``matmul_flops_per_s`` (a large f32
matmul timed in the same run) and ``roofline_fraction_<case>`` = FLOPs per step x its/s
over the matmul FLOP/s.

With ``--config.reference_python=PATH`` (a Python with PyTorch, see
``requirements-bench.txt``) it also runs `experiments/torch_reference.py`, a plain-PyTorch
version of the same step on the same images, in the same run, and reports
``reference_its_per_s_<case>`` and ``ratio_its_<case>`` (jaxinvert over reference). The
reference is plain PyTorch, not breaching 0.1.2 (see README, Speed): ``reference`` says so.
Without that flag the reference keys are null and no ratio is claimed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from experiments import common, reconstruct
from jaxinvert import metrics, runner



def matmul_flops_per_s(size: int, repeats: int = 5) -> float:
  """f32 ``size x size`` matmul throughput of this backend (best of ``repeats``)."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def parse_cases(text: str) -> list[tuple[str, dict]]:
  cases = []
  for item in filter(None, text.split(";")):
    name, _, overrides = item.partition(":")
    cases.append((name, overrides))
  return cases


def measure_case(config) -> dict:
  reconstruct.validate(config)
  key = jax.random.key(config.seed)
  model_key, data_key, client_key, attack_key = jax.random.split(key, 4)
  model, variables = common.build_victim(config, model_key)
  images, labels = common.client_batch(config, data_key)
  out = common.shared_update(config, model, variables, images, labels, client_key)
  update, order = out if config.setting == "fedavg" else (out, None)
  attack = reconstruct.build_attack(config, model, variables, update, order, config.batch_size)
  state = jax.jit(attack.init)(attack_key, jnp.asarray(labels))
  step = jax.jit(attack.step)
  compiled = step.lower(state).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  for _ in range(config.warmup):
    state, _ = step(state)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(config.timed_steps):
    state, _ = step(state)
  jax.block_until_ready(state)
  seconds = (time.perf_counter() - start) / config.timed_steps
  row = {"seconds_per_step": seconds, "its_per_s": 1.0 / seconds, "flops_per_step": flops}
  if config.psnr_iterations:
    result = runner.run(attack, key=attack_key, hypotheses=np.asarray(labels)[None],
                        iterations=config.psnr_iterations, progress=False,
                        log_every=config.psnr_iterations)
    row["psnr"] = metrics.reconstruction_report(result.images, images, labels, labels)["psnr"]
    row["psnr_iterations"] = config.psnr_iterations
  return row


def measure_reference(config, workdir: str, name: str) -> dict:
  """Runs `experiments/torch_reference.py` on this case's images with the PyTorch Python."""
  images, labels = common.client_batch(config, jax.random.split(jax.random.key(config.seed), 4)[1])
  folder = os.path.join(workdir, "reference")
  os.makedirs(folder, exist_ok=True)
  case, out = os.path.join(folder, f"{name}.npz"), os.path.join(folder, f"{name}.json")
  np.savez(case, images=np.asarray(images, np.float32), labels=np.asarray(labels),
           model=config.model, width=config.width, num_classes=common.num_classes(config),
           setting=config.setting, local_epochs=config.local_epochs,
           local_batch_size=common.local_batch_size(config), local_lr=config.local_lr,
           tv=config.tv, lr=config.lr, warmup=config.warmup, timed_steps=config.timed_steps)
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
  proc = subprocess.run([config.reference_python, script, "--case", case, "--out", out],
                        capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"torch reference failed for case {name} ({config.reference_python}):\n"
                       f"{proc.stderr[-3000:]}")
  with open(out) as f:
    return json.load(f)


def run(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  peak = matmul_flops_per_s(config.matmul_size)
  print(f"  matmul {config.matmul_size}^3 f32: {peak / 1e9:.1f} GFLOP/s", flush=True)
  results = {"matmul_flops_per_s": peak, "backend": jax.default_backend(),
             "reference": ("plain PyTorch (experiments/torch_reference.py), not breaching"
                           if config.reference_python else
                           "not measured: no --config.reference_python given"),
             "cases": {}, "config": config}
  for name, overrides in tqdm.tqdm(parse_cases(config.cases), desc="cases"):
    spec = config.copy_and_resolve_references()
    with spec.unlocked():
      spec.cells = overrides
    cfg = common.apply_cell(config, common.parse_cells(spec)[0])
    row = measure_case(cfg)
    row["roofline_fraction"] = row["flops_per_step"] * row["its_per_s"] / peak
    results["cases"][name] = row
    results[f"roofline_fraction_{name}"] = row["roofline_fraction"]
    results[f"jaxinvert_its_per_s_{name}"] = row["its_per_s"]
    print(f"  {name:22s} {row['seconds_per_step'] * 1e3:9.1f} ms/step "
          f"{row['flops_per_step'] / 1e9:7.2f} GFLOP/step  "
          f"{row['flops_per_step'] * row['its_per_s'] / 1e9:6.1f} GFLOP/s  "
          f"roofline {row['roofline_fraction']:.2f}", flush=True)
    results[f"reference_its_per_s_{name}"] = None
    results[f"ratio_its_{name}"] = None
    if config.reference_python:
      ref = measure_reference(cfg, workdir, name)
      row["reference"] = ref
      results[f"reference_its_per_s_{name}"] = ref["its_per_s"]
      results[f"ratio_its_{name}"] = row["its_per_s"] / ref["its_per_s"]
      print(f"  {name:22s} reference {ref['seconds_per_step'] * 1e3:9.1f} ms/step  "
            f"jaxinvert/reference {row['its_per_s'] / ref['its_per_s']:.2f}x", flush=True)
  path = common.write_results(workdir, results)
  common.announce(workdir, [path])
  return results



if __name__ == "__main__":
  common.script_main(run, default_config="bench_speed.py",
                     description="Benchmark config.")
