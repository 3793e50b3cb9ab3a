r"""Memory and time of one unrolled FedAvg attack step against local steps, with/without remat.

  python -m experiments.bench_fedavg_memory --workdir=workdirs/bench_fedavg_memory

For each number of local steps (local_epochs x B / local_batch_size), compiles one
gradient step of the unrolled FedAvg objective (d/dimages of ||simulate - shared||^2)
with and without `jax.checkpoint` on the local step, and reports the compiled
``memory_analysis()`` (temporary bytes: activations kept for the backward pass) and
the measured seconds per step. Writes results.json and memory.png.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp

from experiments import common
from jaxinvert import data, models, objectives, simulators, victim, viz


def measure(config) -> dict:
  model = models.get_model(config.model, num_classes=20, image_size=config.image_size,
                           width=config.width or None)
  variables = jax.jit(model.init)(jax.random.key(config.seed))
  images, labels = data.sample_batch(jax.random.key(1), source=data.Photos(config.image_size),
                                     batch_size=config.batch_size, label_dist="random")
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  rows = []
  for epochs in (int(e) for e in config.epochs.split(",")):
    steps = victim.local_steps(config.batch_size, local_epochs=epochs,
                               local_batch_size=config.local_batch_size)
    for remat in (False, True):
      simulate = simulators.fedavg_unroll(model.apply, variables, local_epochs=epochs,
                                          local_batch_size=config.local_batch_size,
                                          local_lr=config.local_lr, remat=remat)
      target = simulate(None, images, labels)
      loss = lambda x: objectives.squared_l2(simulate(None, x, labels), target)
      step = jax.jit(jax.value_and_grad(loss))
      dummy = jax.random.uniform(jax.random.key(2), images.shape)
      compiled = step.lower(dummy).compile()
      memory = compiled.memory_analysis()
      temp = int(getattr(memory, "temp_size_in_bytes", -1)) if memory is not None else -1
      jax.block_until_ready(compiled(dummy))
      start = time.perf_counter()
      for _ in range(config.repeats):
        jax.block_until_ready(compiled(dummy))
      seconds = (time.perf_counter() - start) / config.repeats
      rows.append({"local_epochs": epochs, "local_steps": steps, "remat": remat,
                   "temp_bytes": temp, "seconds_per_step": seconds})
      print(f"steps {steps:3d} remat {remat!s:5s}: temp {temp / 2**20:8.2f} MiB, "
            f"{seconds * 1e3:8.1f} ms/step", flush=True)
  return {"config": config, "rows": rows, "backend": jax.default_backend()}


def run(config, workdir: str) -> dict:
  results = measure(config)
  rows = results["rows"]
  files = [common.write_results(workdir, results), os.path.join(workdir, "memory.png")]
  viz.curves(files[1], {
      f"remat={r}": ([x["local_steps"] for x in rows if x["remat"] == r],
                     [x["temp_bytes"] / 2**20 for x in rows if x["remat"] == r])
      for r in (False, True)}, xlabel="local SGD steps unrolled",
             ylabel="compiled temporary memory (MiB)", markers=True)
  common.announce(workdir, files)
  return results


if __name__ == "__main__":
  common.script_main(run, default_config="bench_fedavg_memory.py", compilation_cache=False,
                     description="Benchmark config.")
