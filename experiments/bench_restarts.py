"""Seconds per restart-step of each execution strategy, on this machine, in one run.

  python -m experiments.bench_restarts --workdir=workdirs/bench_restarts

For every conv implementation (`models.ConvImpl`) and strategy variant
(`runner.Strategy`, optionally with several steps fused in one jitted `lax.scan`), the
attack of `experiments/configs/bench_restarts.py` is stepped by `runner.Stepper` (the
engine of `runner.run`): compiled and warmed up by ``warmup`` steps, then timed over
``iterations`` steps; the time over ``iterations x copies`` is the steady-state seconds
per restart-step. `results.json` holds every variant, the
`default_strategy` (and default conv impl) of this backend and
``ratio_default_vs_host_loop``: the default's seconds per restart-step over the host
loop's with XLA's own convolutions, the baseline of issue 4.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import tqdm

from experiments import common
from experiments import reconstruct
from jaxinvert import models, parallel, runner



def parse_variant(text: str) -> tuple[runner.Strategy, int]:
  name, _, fused = text.partition(":")
  return runner.Strategy(name), int(fused or 1)


def build_case(config):
  """The victim, the client's update and the attack of ``config``: (attack, [1, B] labels)."""
  model, variables = common.build_victim(config, jax.random.key(config.seed))
  images, labels = common.client_batch(config, jax.random.key(config.seed + 1))
  out = common.shared_update(config, model, variables, images, labels, None)
  update, order = out if config.setting == "fedavg" else (out, None)
  attack = reconstruct.build_attack(config, model, variables, update, order, config.batch_size)
  return attack, np.asarray(labels)[None]


def seconds_per_step(attack, hyps, config, strategy, fused, mesh=None) -> float:
  """Compiles and warms up, then times ``config.iterations`` steps of all copies.

  Args:
    attack: the attack to step.
    hyps: ``[H, B]`` label hypotheses; copies = H x ``config.restarts``.
    config: ``seed``, ``restarts``, ``warmup``, ``iterations``.
    strategy: how the copies are stepped.
    fused: steps per jitted call.
    mesh: for SHARDED, the mesh to split the copies over (default: all devices).

  Returns:
    Wall seconds per step of all copies together (steady state).
  """
  states = runner.init_states(attack, jax.random.key(config.seed), hyps, config.restarts)
  num = hyps.shape[0] * config.restarts
  if strategy == runner.Strategy.SHARDED:
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_divisible(num, mesh)
    states = jax.device_put(states, parallel.copies_sharding(mesh))
  stepper = runner.Stepper(attack, strategy, config.restarts, num, fused, mesh)
  work = stepper.prepare(states)
  work, rows = stepper.advance(work, max(config.warmup, fused))
  jax.block_until_ready((work, rows))
  start = time.perf_counter()
  work, rows = stepper.advance(work, config.iterations)
  jax.block_until_ready((work, rows))
  return (time.perf_counter() - start) / config.iterations


def measure(config) -> dict:
  """Seconds per restart-step per (conv impl, variant)."""
  variants = [parse_variant(v) for v in config.variants.split(",") if v]
  impls = [models.ConvImpl(i) for i in config.conv_impls.split(",") if i]
  rows = []
  bar = tqdm.tqdm(total=len(variants) * len(impls) * config.repeats, desc="variants",
                  disable=not config.progress)
  for impl in impls:
    cfg = config.copy_and_resolve_references()
    cfg.conv_impl = impl.value
    attack, hyps = build_case(cfg)
    copies = cfg.restarts
    for strategy, fused in variants:
      if strategy == runner.Strategy.SHARDED and copies % jax.device_count():
        continue
      samples = []
      for _ in range(config.repeats):
        samples.append(seconds_per_step(attack, hyps, cfg, strategy, fused) / copies)
        bar.update(1)
      rows.append({"conv_impl": impl.value, "strategy": strategy.value, "steps_per_call": fused,
                   "seconds_per_restart_step": float(np.median(samples)),
                   "samples": samples})
      print(f"  {impl.value:10s} {strategy.value:10s} x{fused}: "
            f"{rows[-1]['seconds_per_restart_step'] * 1e3:8.1f} ms/restart-step", flush=True)
  bar.close()
  return rows


def run(config, workdir: str) -> dict:
  reconstruct.validate(config)
  os.makedirs(workdir, exist_ok=True)
  rows = measure(config)
  default = runner.default_strategy()
  default_impl = models.default_conv_impl()
  default_fused = runner.default_steps_per_call()

  def lookup(impl, strategy, fused):
    for r in rows:
      if (r["conv_impl"], r["strategy"], r["steps_per_call"]) == (impl, strategy, fused):
        return r["seconds_per_restart_step"]
    return None

  base = lookup("xla", "host_loop", 1)
  chosen = lookup(default_impl.value, default.value, default_fused)
  results = {
      "variants": rows,
      "default_strategy": default.value,
      "default_conv_impl": default_impl.value,
      "default_seconds_per_restart_step": chosen,
      "host_loop_xla_seconds_per_restart_step": base,
      "ratio_default_vs_host_loop": (chosen / base) if chosen and base else None,
      "backend": jax.default_backend(), "devices": jax.device_count(),
      "config": config,
  }
  path = common.write_results(workdir, results)
  common.announce(workdir, [path])
  if results["ratio_default_vs_host_loop"] is not None:
    print(f"jaxinvert: default {default.value}/{default_impl.value} "
          f"{chosen * 1e3:.1f} ms per restart-step; ratio vs XLA-conv host loop "
          f"{results['ratio_default_vs_host_loop']:.3f}", flush=True)
  return results



if __name__ == "__main__":
  common.script_main(run, default_config="bench_restarts.py",
                     description="Benchmark config.")
