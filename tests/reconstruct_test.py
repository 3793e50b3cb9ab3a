import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from experiments import reconstruct
from experiments.configs import lenet_b1, lenet_fedavg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  config = lenet_b1.get_config()
  config.iterations = 40
  config.log_every = 20
  config.progress = False
  for k, v in overrides.items():
    config[k] = v
  return config


_SMALL = dict(iterations=20, log_every=10, width=3, image_size=16)


def test_run_and_command_line_write_the_same_results(tmp_path):
  # The same config in this process and from the command line: the files, and the same
  # numbers from the same seed (the command line reuses the compiled attack from the
  # suite's compilation cache).
  results = reconstruct.run(_config(**_SMALL), str(tmp_path / "run"))
  for name in ("results.json", "reconstruction.png", "loss_curve.png"):
    assert (tmp_path / "run" / name).stat().st_size > 0
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  for key in ("psnr", "ssim", "label_accuracy", "labels_exact", "seconds", "config",
              "per_image_psnr", "chosen_restart", "chosen_hypothesis", "loss_curve"):
    assert key in saved
  assert saved["config"]["model"] == "lenet"
  assert saved["label_accuracy"] == 1.0  # iDLG is exact for one image
  assert len(saved["loss_curve"]) == 20
  assert results["psnr"] == saved["psnr"]
  out = subprocess.run(
      [sys.executable, "-m", "experiments.reconstruct", f"--workdir={tmp_path / 'cli'}",
       "--config.progress=False", *(f"--config.{k}={v}" for k, v in _SMALL.items())],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "jaxinvert: wrote results.json" in out.stdout
  again = json.loads((tmp_path / "cli" / "results.json").read_text())
  assert again["loss_curve"] == saved["loss_curve"] and again["psnr"] == saved["psnr"]


def test_steps_per_call_reaches_the_runner(tmp_path, monkeypatch):
  # Only the plumbing: that fused and single steps agree is runner_test's.
  seen = []

  class Reached(Exception):
    pass

  def spy(*args, **kwargs):
    seen.append(kwargs["steps_per_call"])
    raise Reached

  monkeypatch.setattr(reconstruct.runner, "run", spy)
  small = dict(iterations=4, log_every=2, width=3, image_size=16, strategy="vmap")
  for steps_per_call in (2, 0):
    with pytest.raises(Reached):
      reconstruct.run(_config(steps_per_call=steps_per_call, **small), str(tmp_path))
  assert seen == [2, None]  # 0 leaves the choice to runner.default_steps_per_call


@pytest.mark.parametrize("field,value,match", [
    ("batch_size", -3, "config.batch_size"),
    ("model", "vgg", "config.model"),
    ("label_dist", "single:5", "config.label_dist"),
    ("restarts", -1, "config.restarts"),
    ("optimizer", "sgd", "config.optimizer"),
    ("bn", 0.1, "config.bn: the BatchNorm prior needs a model with BatchNorm; lenet has none"),
    ("setting", "fedprox", "config.setting"),
    ("dataset", "mnist", "config.dataset"),
    ("scan_unroll", -1, "config.scan_unroll"),
    ("steps_per_call", -2, "config.steps_per_call: must be >= 0"),
    ("label_arrangements", 3, "config.label_arrangements: places restored labels on a known "
     "FedAvg order"),
    ("label_arrangements", 0, "config.label_arrangements: must be >= 1"),
    ("wrong_labels", 1, "config.wrong_labels: changes the true labels: it needs "
     "label_source=true"),
])
def test_nonsense_config_rejected_before_work(tmp_path, field, value, match):
  with pytest.raises(ValueError, match=match):
    reconstruct.run(_config(**{field: value}), str(tmp_path))
  assert not (tmp_path / "results.json").exists()


def test_fedavg_order_samples_out_of_range_rejected_before_work(tmp_path):
  config = _config(setting="fedavg", batch_size=2, fedavg_order="average",
                   fedavg_order_samples=0)
  with pytest.raises(ValueError, match="config.fedavg_order_samples: must be >= 1, got 0"):
    reconstruct.run(config, str(tmp_path))
  assert not (tmp_path / "results.json").exists()


def test_fedavg_restored_labels_tried_in_every_mini_batch_placement(tmp_path):
  config = lenet_fedavg.get_config()
  # Adam over one local epoch: the placements are the point here, and L-BFGS through two
  # unrolled epochs compiled for about as long as the rest of this test.
  for k, v in dict(iterations=10, log_every=10, progress=False, width=3, image_size=16,
                   label_source="restored", label_arrangements=6, optimizer="adam",
                   local_epochs=1).items():
    config[k] = v
  results = reconstruct.run(config, str(tmp_path))
  placements = results["label_restoration"]["placements"]
  counts = np.asarray(results["label_restoration"]["counts"])
  assert 0 < results["label_restoration"]["seconds"] < results["seconds"]
  assert len(placements) == len(results["final_losses"]) == 6   # 4 distinct labels, pairs
  for p in placements:
    np.testing.assert_array_equal(np.bincount(p, minlength=counts.size), counts)
  chosen = int(results["chosen_hypothesis"])
  assert results["final_losses"][chosen][0] == min(l[0] for l in results["final_losses"])


def test_restored_label_hypotheses_cover_every_count_vector_of_a_small_head():
  # 4 images on a 2-class head have 5 count vectors: asking for 8 tries each once, the
  # restored counts first; asking for 3 tries the 3 nearest the scores.
  from experiments import common  # pylint: disable=g-import-not-at-top
  from jaxinvert import victim  # pylint: disable=g-import-not-at-top
  config = _config(batch_size=4, label_dist="random", num_classes=2, image_size=16,
                   hypotheses=8)
  reconstruct.validate(config)
  model, variables = common.build_victim(config, jax.random.key(0))
  images, true = common.client_batch(config, jax.random.key(1))
  update = victim.fedsgd_update(model.apply, variables, images, true)
  hyps, info = reconstruct._hypotheses(  # pylint: disable=protected-access
      config, model, variables, update, true, jax.random.key(2))
  vectors = [tuple(np.bincount(h, minlength=2)) for h in hyps]
  assert sorted(vectors) == [(0, 4), (1, 3), (2, 2), (3, 1), (4, 0)]
  assert vectors[0] == tuple(info["counts"])
  config.hypotheses = 3
  few, _ = reconstruct._hypotheses(  # pylint: disable=protected-access
      config, model, variables, update, true, jax.random.key(2))
  np.testing.assert_array_equal(few, hyps[:3])


def test_wrong_labels_change_that_many_of_the_true_labels():
  # The label hypothesis of the one-wrong-label finding (experiments/configs/wrong_labels.py).
  config = _config(label_source="true", batch_size=4, label_dist="single:2", wrong_labels=1)
  reconstruct.validate(config)
  true = np.array([3, 3, 7, 11], np.int32)
  model = types.SimpleNamespace(num_classes=20)
  for seed in range(4):
    hyps, info = reconstruct._hypotheses(  # pylint: disable=protected-access
        config, model, None, None, true, jax.random.key(seed))
    assert hyps.shape == (1, 4) and info["method"] == "true, 1 changed"
    assert np.sum(hyps[0] != true) == 1 and hyps[0].min() >= 0 and hyps[0].max() < 20
  config.wrong_labels = 5
  with pytest.raises(ValueError, match="config.wrong_labels: must be between 0 and batch_size"):
    reconstruct.validate(config)


@pytest.mark.parametrize("field, value, match", [
    ("labels", "3,a", r"config.labels: needs integers in \[0, 20\)"),
    ("labels", "3,20", r"config.labels: needs integers in \[0, 20\)"),
    ("labels", "3,-1", r"config.labels: needs integers"),
    ("label_method", "bogus", "config.label_method: 'bogus' is not one of"),
])
def test_given_labels_and_label_method_are_checked_before_any_work(field, value, match):
  config = _config(batch_size=2, label_source="given", labels="3,19")
  reconstruct.validate(config)  # the largest class passes
  config[field] = value
  if field == "label_method":
    config.label_source = "restored"
  with pytest.raises(ValueError, match=match):
    reconstruct.validate(config)
