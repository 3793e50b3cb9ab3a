"""Attack-step throughput per case, against this machine's matmul limit, in one run.

  python -m experiments.bench_speed --workdir=workdirs/bench_speed

For every case of `experiments/configs/bench_speed.py` it builds the attack exactly
as `experiments.reconstruct` does, compiles one restart's step, and reports:
``jaxinvert_its_per_s`` (steady-state restart-iterations per second),
``flops_per_step`` (XLA's compiled cost analysis), ``matmul_flops_per_s`` (a large f32
matmul timed in the same run) and ``roofline_fraction_<case>`` = FLOPs per step x its/s
over the matmul FLOP/s. The PyTorch reference of issue 6 (breaching 0.1.2) is not part
of this script's measurements: ``reference_its_per_s`` is null and ``reference`` says
why, so no ratio is claimed that was not measured.
"""

from __future__ import annotations

import os
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


def run(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  peak = matmul_flops_per_s(config.matmul_size)
  print(f"  matmul {config.matmul_size}^3 f32: {peak / 1e9:.1f} GFLOP/s", flush=True)
  results = {"matmul_flops_per_s": peak, "backend": jax.default_backend(),
             "reference": "not measured by this script: breaching 0.1.2 / PyTorch is not "
                          "installed in requirements.txt (see README, Speed)",
             "reference_its_per_s": None, "cases": {}, "config": config}
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
  path = common.write_results(workdir, results)
  common.announce(workdir, [path])
  return results



if __name__ == "__main__":
  common.script_main(run, default_config="bench_speed.py",
                     description="Benchmark config.")
