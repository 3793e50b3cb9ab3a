"""A multi-host run of `experiments/reconstruct.py`, simulated by two CPU processes.

Two processes with two simulated CPU devices each join one JAX distributed runtime
(``--config.distributed=True`` with a coordinator on localhost; on a TPU pod slice
`jax.distributed.initialize` finds the same arguments by itself), shard one attack's
copies over the four devices and checkpoint into one shared workdir; the latest
checkpoint is then removed, as a crash would leave it, and the same command resumes.
A one-process, one-device run of the same attack is the reference. The processes talk
over gloo (JAX's CPU collectives).
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny attack: sigmoid LeNet of width 3 on 8x8 photos, B=2 with their true labels,
# 4 restarts of Adam (4 copies: one per device of the two processes).
FLAGS = ["--config.width=3", "--config.image_size=8", "--config.batch_size=2",
         "--config.label_source=true", "--config.optimizer=adam", "--config.restarts=4",
         "--config.log_every=3", "--config.progress=False"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(workdir: str, extra: list[str], devices: int) -> subprocess.Popen:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                       + f" --xla_force_host_platform_device_count={devices}").strip()}
  return subprocess.Popen([sys.executable, "-m", "experiments.reconstruct",
                           f"--workdir={workdir}", *FLAGS, *extra], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _pair(workdir: str, extra: list[str]) -> list[subprocess.Popen]:
  address = f"localhost:{_free_port()}"
  return [_start(workdir, ["--config.distributed=True",
                           f"--config.coordinator_address={address}",
                           "--config.num_processes=2", f"--config.process_id={i}", *extra],
                 devices=2) for i in range(2)]


def _finish(procs: list[subprocess.Popen]) -> list[str]:
  """Waits for ``procs``; on a failure or a timeout none of them is left running."""
  logs = []
  try:
    for proc in procs:
      out, _ = proc.communicate(timeout=400)
      assert proc.returncode == 0, out[-3000:]
      logs.append(out)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  return logs


def _results(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def runs(run_once, tmp_path_factory):
  return run_once("multihost_test", lambda: _runs(tmp_path_factory.mktemp("multihost")))


def _runs(root) -> dict:
  shared, single = str(root / "shared"), str(root / "single")
  flags = ["--config.iterations=9", "--config.checkpoint_every=3"]
  first = _pair(shared, flags)
  reference = _start(single, ["--config.iterations=9", "--config.strategy=vmap"], devices=1)
  try:
    first_logs = _finish(first)
    first_results = _results(shared)
    checkpoints = sorted(os.listdir(os.path.join(shared, "checkpoints")))
    # What a crash between steps 6 and 9 leaves on disk: the checkpoint of step 6 (orbax
    # keeps the latest two). The same command, started again, resumes from it.
    shutil.rmtree(os.path.join(shared, "checkpoints", "9"))
    second_logs = _finish(_pair(shared, flags))
  finally:
    _finish([reference])
  return dict(first=first_results, first_logs=first_logs, resumed=_results(shared),
              resumed_logs=second_logs, single=_results(single), checkpoints=checkpoints)


def test_the_processes_share_one_mesh_and_one_writer(runs):
  assert runs["first"]["devices"] == 4 and runs["single"]["devices"] == 1
  assert runs["checkpoints"] == ["6", "9"]
  assert "resumed from the checkpoint of step 6" in runs["resumed_logs"][0]
  assert "resumed from" not in runs["first_logs"][0]
  for logs in (runs["first_logs"], runs["resumed_logs"]):
    assert "wrote results.json" in logs[0]
    assert "wrote results.json" not in logs[1]
    assert "process 1 of 2 done; process 0 writes the outputs" in logs[1]


@pytest.mark.parametrize("run", ["first", "resumed"])
def test_multihost_run_equals_one_device(runs, run):
  result, single = runs[run], runs["single"]
  assert result["steps"] == 9
  assert result["resumed_from_step"] == {"first": 0, "resumed": 6}[run]
  losses, reference = np.asarray(result["final_losses"]), np.asarray(single["final_losses"])
  assert np.ptp(reference) > 0  # the restarts differ, so the selection means something
  np.testing.assert_allclose(losses, reference, rtol=1e-4)
  np.testing.assert_allclose(result["loss_curve"], single["loss_curve"], rtol=1e-4)
  assert result["chosen_restart"] == single["chosen_restart"]
  assert result["psnr"] == pytest.approx(single["psnr"], abs=1e-3)


def test_a_multihost_run_rejects_a_one_device_strategy():
  from experiments.configs import lenet_b1
  from experiments import reconstruct
  c = lenet_b1.get_config()
  c.distributed, c.strategy = True, "vmap"
  with pytest.raises(ValueError, match="config.strategy.*multi-host"):
    reconstruct.validate(c)
  c = lenet_b1.get_config()
  c.num_processes = 2
  with pytest.raises(ValueError, match="config.distributed"):
    reconstruct.validate(c)
