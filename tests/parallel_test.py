"""The sharded strategy on 8 simulated CPU devices, in a process of its own.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before JAX starts,
so the test re-runs this file as a script with that flag; the rest of the suite keeps
its single device. The worker prints a JSON report that the test checks.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = 8


def _scaling() -> dict:
  """experiments/bench_scaling.py on a tiny LeNet over 1 and all 8 devices."""
  import tempfile

  from experiments import bench_scaling
  from experiments.configs import bench_scaling as scaling_config

  c = scaling_config.get_config()
  c.model, c.width, c.image_size, c.batch_size = "lenet", 2, 8, 2
  c.devices, c.restarts_per_device, c.steps_per_call, c.iterations = "1,8", "1,2", 2, 2
  c.progress = False
  workdir = tempfile.mkdtemp()
  out = bench_scaling.run(c, workdir)
  errors = {}
  for field, value in (("devices", "16"), ("restarts_per_device", "0")):
    bad = c.copy_and_resolve_references()
    bad[field] = value
    try:
      bench_scaling.run(bad, workdir)
    except ValueError as e:
      errors[field] = str(e)
  return {"rows": [[r["devices"], r["restarts_per_device"], r["copies"],
                    r["restart_its_per_s"]] for r in out["rows"]],
          "efficiency_8dev": out["efficiency_8dev"],
          "files": sorted(os.listdir(workdir)), "errors": errors}


def _worker() -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import experiments  # noqa: F401  (same PRNG setting as the scripts)
  from jaxinvert import attack, models, parallel, priors, runner, simulators, victim

  model = models.get_model("lenet", num_classes=5, image_size=8, width=3,
                           conv_impl="xla")  # compiles faster than the CPU default
  variables = model.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(7), (2, *model.image_shape))
  y = jnp.array([1, 3], jnp.int32)
  target = victim.fedsgd_update(model.apply, variables, x, y)
  a = attack.matching_attack(
      simulate=simulators.fedsgd(model.apply, variables), target=target, batch_size=2,
      image_shape=model.image_shape,
      optimizer=attack.make_optimizer(attack.Optimizer.ADAM, learning_rate=0.05, iterations=12),
      priors=[priors.total_variation(0.01), priors.group_consistency(0.01)])
  # H=4, R=16: 64 copies, the size issue 6 asks to run unchanged from 1 device to a pod.
  hyps = np.array([[1, 3], [3, 1], [1, 1], [3, 3]], np.int32)
  kw = dict(key=jax.random.key(3), hypotheses=hyps, restarts=16, iterations=12, log_every=4,
            progress=False)
  single = runner.run(a, strategy=runner.Strategy.VMAP, **kw)
  mesh = parallel.make_mesh()
  sharded = runner.run(a, strategy=runner.Strategy.SHARDED, mesh=mesh, **kw)
  latent = sharded.states.latent
  shards = sorted((s.device.id, s.data.shape[0]) for s in latent.addressable_shards)
  errors = {}
  try:
    runner.run(a, strategy=runner.Strategy.SHARDED, mesh=mesh,
               **{**kw, "hypotheses": hyps[:3], "restarts": 3})
  except ValueError as e:
    errors["indivisible"] = str(e)
  print(json.dumps({
      "scaling": _scaling(),
      "devices": jax.device_count(),
      "shards": shards,
      "sharding_spec": str(latent.sharding.spec),
      "max_image_diff": float(np.max(np.abs(single.all_images - sharded.all_images))),
      "max_loss_rel_diff": float(np.max(np.abs(single.losses - sharded.losses)
                                        / np.abs(single.losses))),
      "single_choice": [single.hypothesis, single.restart],
      "sharded_choice": [sharded.hypothesis, sharded.restart],
      "losses_spread": float(np.ptp(single.losses)),
      "errors": errors,
  }))


def _report() -> dict:
  env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                                  + f" --xla_force_host_platform_device_count={DEVICES}"),
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report(run_once):
  return run_once("parallel_test", _report)


def test_every_device_holds_its_shard(report):
  assert report["devices"] == DEVICES
  assert report["shards"] == [[i, 64 // DEVICES] for i in range(DEVICES)]
  assert "copies" in report["sharding_spec"]


def test_sharded_equals_single_device(report):
  assert report["losses_spread"] > 0  # the copies differ, so the selection means something
  assert report["max_image_diff"] < 1e-4
  assert report["max_loss_rel_diff"] < 1e-3
  assert report["sharded_choice"] == report["single_choice"]


def test_indivisible_copies_raise_a_clear_error(report):
  assert "does not divide over 8 devices" in report["errors"]["indivisible"]


def test_scaling_benchmark_runs_over_submeshes(report):
  scaling = report["scaling"]
  assert [row[:3] for row in scaling["rows"]] == [[1, 1, 1], [1, 2, 2], [8, 1, 8], [8, 2, 16]]
  assert all(row[3] > 0 for row in scaling["rows"])
  one, eight = scaling["rows"][1][3], scaling["rows"][3][3]
  assert scaling["efficiency_8dev"] == pytest.approx(eight / (8 * one))
  assert {"results.json", "throughput_vs_restarts.png",
          "throughput_vs_devices.png"} <= set(scaling["files"])
  assert "config.devices" in scaling["errors"]["devices"]
  assert "8 available" in scaling["errors"]["devices"]
  assert "config.restarts_per_device" in scaling["errors"]["restarts_per_device"]


if __name__ == "__main__":
  _worker()
