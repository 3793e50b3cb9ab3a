"""Every experiment script runs on a tiny config and writes what it promises."""

import importlib
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import labels

from experiments import common
from experiments import (bench_fedavg_memory, bench_restarts, bench_scaling, bench_speed,
                         reconstruct, rescore_labels, restore_labels, sweep,
                         train_victim)
from experiments.configs import (bench_fedavg_memory as memory_config, bench_restarts as
                                 restarts_config, bench_scaling as scaling_config,
                                 bench_speed as speed_config, labels as
                                 labels_config, labels_fedavg, labels_rescore, lenet_b4,
                                 train_victim as train_config)


def _read(path):
  with open(path) as f:
    return json.load(f)


def test_restore_labels_writes_every_method(tmp_path):
  c = labels_config.get_config()
  c.model, c.width, c.batch_size, c.label_dist, c.trials = "lenet", 0, 3, "single:2", 2
  c.methods, c.progress = "geng,geng_bias,recentred,cluster", False
  c.image_size = 32
  restore_labels.run(c, str(tmp_path))
  out = _read(tmp_path / "results.json")
  assert out["default"] == labels.DEFAULT_METHOD.value
  for m in ("geng", "geng_bias", "recentred", "cluster"):
    assert 0.0 <= out["methods"][m]["label_accuracy"] <= 1.0
    assert len(out["methods"][m]["per_trial"]) == 2
    assert all(sum(t["counts"]) == 3 for t in out["methods"][m]["per_trial"])
  assert (tmp_path / "labels.png").exists()
  assert out["victim"] == {"train_steps": 0}
  rule = out["sign_rule"]  # LeNet's sigmoid features: the weight rows count too
  assert rule["subset_rate"] == 1.0 and rule["classes"] == [2, 2]
  assert all(1 <= f <= 2 for f in rule["flagged"])


def _tiny_rescore_config():
  c = labels_rescore.get_config()  # DLG's LeNet, untrained: the attack separates labels
  c.model, c.width, c.train_steps, c.trials, c.progress = "lenet", 0, 0, 2, False
  c.image_size = 16
  c.optimizer, c.distance, c.box, c.tv, c.lr = "lbfgs", "l2", "none", 0.0, 1.0
  c.iterations = c.log_every = 30
  c.cells = "num_classes=2,batch_size=2,label_dist=unique"
  return c


def test_rescore_labels_picks_the_count_vector_whose_attack_matches(tmp_path):
  out = rescore_labels.run(_tiny_rescore_config(), str(tmp_path))
  assert (tmp_path / "labels_rescore.png").exists()
  assert _read(tmp_path / "results.json")["table"]["exact_match_rate"]["attack"] == [1.0]
  cell = out["cells"][0]
  assert cell["num_candidates"] == [3, 3] and cell["truth_among_rate"] == 1.0
  for trial, truth in zip(cell["methods"]["attack"]["per_trial"], cell["true_counts"]):
    assert sorted(map(tuple, trial["candidates"])) == [(0, 2), (1, 1), (2, 0)]
    losses = dict(zip(map(tuple, trial["candidates"]), trial["losses"]))
    assert min(losses, key=losses.get) == tuple(truth) == tuple(trial["counts"])
    assert trial["truth_rank"] == 0
  # The truth's copy matched far better than either wrong vector's (ratios 20-75 here).
  assert min(cell["loss_ratio_best_wrong_over_truth"]) > 2.0


def test_rescore_labels_names_bad_fields():
  c = _tiny_rescore_config()
  c.setting = "fedavg"
  with pytest.raises(ValueError, match="setting.*FedSGD gradients only"):
    rescore_labels.validate(c)
  c = _tiny_rescore_config()
  c.hypotheses = 0
  with pytest.raises(ValueError, match="hypotheses"):
    rescore_labels.validate(c)


def test_restore_labels_records_how_far_the_victim_trained(tmp_path):
  c = labels_config.get_config()
  c.model, c.width, c.batch_size, c.label_dist, c.trials = "lenet", 0, 2, "unique", 1
  c.methods, c.progress, c.image_size, c.train_steps = "geng_bias", False, 16, 2
  c.cells = "batch_size=2,label_dist=unique;batch_size=3,label_dist=unique"
  restore_labels.run(c, str(tmp_path))
  cells = _read(tmp_path / "results.json")["cells"]
  victim = cells[0]["victim"]
  assert victim == cells[1]["victim"]  # one victim, trained once
  assert victim["train_steps"] == 2 and np.isfinite(victim["train_loss"])
  assert 0.0 <= victim["train_accuracy"] <= 1.0


def test_restore_labels_on_a_head_wider_than_the_data(tmp_path):
  # 40 outputs over 4 photo classes: count vectors have the head's length, and the
  # batch's classes are among the data's. (FIT's wide-head path is tested in
  # label_fit_test, where it is cheaper to compile.)
  c = labels_config.get_config()
  c.model, c.width, c.batch_size, c.label_dist, c.trials = "lenet", 0, 3, "single:2", 2
  c.methods, c.progress, c.image_size = "geng_bias,idlg", False, 16
  c.num_classes, c.head_classes = 4, 40
  restore_labels.run(c, str(tmp_path))
  out = _read(tmp_path / "results.json")
  truth = np.asarray(out["true_counts"])
  assert truth.shape == (2, 40) and truth[:, 4:].sum() == 0 and (truth.sum(1) == 3).all()
  for m in ("geng_bias", "idlg"):
    assert all(len(t["counts"]) == 40 and sum(t["counts"]) == 3
               for t in out["methods"][m]["per_trial"])
  c.head_classes = 3
  with pytest.raises(ValueError, match="config.head_classes"):
    restore_labels.validate(c)
  c.num_classes, c.head_classes = 1, 0
  with pytest.raises(ValueError, match="config.num_classes: the victim would have 1 output"):
    restore_labels.validate(c)
  c.head_classes, c.label_dist = 2, "repeat"  # one class of data under a 2-output head
  restore_labels.validate(c)


def test_scripts_add_their_xla_flags_unless_the_user_set_them():
  flag = restore_labels.XLA_FLAGS[0]
  assert common.with_xla_flags("", [flag]) == flag
  assert common.with_xla_flags("--a=1", [flag]) == f"--a=1 {flag}"
  mine = flag.split("=")[0] + "=true"
  assert common.with_xla_flags(mine, [flag]) == mine
  longer = flag.split("=")[0] + "_other=1"  # another flag whose name starts with ours
  assert common.with_xla_flags(longer, [flag]) == f"{longer} {flag}"


def test_sign_rule_summary_counts_misreads():
  flagged = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
  truth = np.array([[2, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 0]])
  summary = restore_labels.sign_rule_summary(flagged, truth)
  assert summary["flagged"] == [1, 1, 2, 1] and summary["classes"] == [1, 2, 3, 1]
  assert summary["subset_rate"] == 0.75 and summary["complete_rate"] == 0.25
  assert summary["one_flagged_misread"] == 1  # the second batch (the fourth is not a subset)
  # A 2-class head: the rule is not applied there, so nothing is misread by it.
  two = restore_labels.sign_rule_summary(np.array([[1, 0], [1, 0]]), np.array([[3, 1], [4, 0]]))
  assert two["one_flagged_misread"] == 0 and two["complete_rate"] == 0.5


def test_restore_labels_fedavg_cells_table_and_figure(tmp_path):
  c = labels_fedavg.get_config()
  c.model, c.width, c.trials, c.methods, c.progress = "lenet", 0, 2, "geng_bias,select", False
  c.cells = ("local_lr=0.00001,batch_size=3,label_dist=single:2;"
             "local_lr=0.1,batch_size=2,label_dist=unique")
  restore_labels.run(c, str(tmp_path))
  out = _read(tmp_path / "results.json")
  assert out["table"]["cells"][0]["local_lr"] == 1e-5
  assert out["cells"][1]["cell"] == {"local_lr": 0.1, "batch_size": 2,
                                     "label_dist": "unique"}
  # At a negligible local lr the FedAvg update is lr x steps x the FedSGD gradient, whose
  # counts the untrained DLG LeNet gives exactly (docs/labels.md).
  assert out["table"]["exact_match_rate"]["select"][0] == 1.0
  # ... and leaves the client's predictions where they were; at lr 0.1 the LeNet moves.
  low, high = out["table"]["fitted_fraction"]
  assert abs(low) < 0.01 < high
  assert (tmp_path / "labels_cells.png").exists()


def test_sweep_writes_table_and_figure(tmp_path):
  c = lenet_b4.get_config()
  c.batch_size, c.label_dist, c.label_source, c.restarts = 2, "repeat", "true", 1
  c.width, c.image_size, c.optimizer = 3, 8, "adam"
  c.iterations, c.log_every, c.progress = 4, 2, False
  c.cells, c.sweep_x, c.sweep_series = "tv=0.0;tv=0.1,wrong_labels=1", "tv", ""
  sweep.run(c, str(tmp_path))
  out = _read(tmp_path / "results.json")
  assert [r["cell"]["tv"] for r in out["rows"]] == [0.0, 0.1]
  # One of the two true labels changed: half the multiset is right.
  assert [r["label_accuracy"] for r in out["rows"]] == [1.0, 0.5]
  for row in out["rows"]:  # both images share a label: one same-label pair, no other
    assert isinstance(row["blend"]["same_label"], float)
    assert row["blend"]["different_label"] is None
  assert (tmp_path / "sweep.png").exists()


def test_cells_are_typed_like_the_config_and_bad_ones_are_named():
  c = lenet_b4.get_config()
  c.cells = "batch_size=2, tv=0.1,progress=False;local_lr=1e-3,remat=true"
  assert common.parse_cells(c) == [{"batch_size": 2, "tv": 0.1, "progress": False},
                                   {"local_lr": 1e-3, "remat": True}]
  for cells, named in (("batch_size=x", "batch_size='x' .* not of type int"),
                       ("remat=yes", "remat='yes'"), ("batch_size", ".* is not field=value"),
                       ("bogus=1", "unknown field 'bogus'")):
    c.cells = cells
    with pytest.raises(ValueError, match=f"config.cells: {named}"):
      common.parse_cells(c)


def test_train_victim_saves_checkpoints(tmp_path):
  c = train_config.get_config()
  c.model, c.width, c.train_steps, c.save_steps = "lenet", 0, 3, "0,3"
  c.train_batch_size, c.train_pool, c.eval_pool, c.progress = 4, 2, 1, False
  c.num_classes = 4
  train_victim.run(c, str(tmp_path))
  out = _read(tmp_path / "results.json")
  assert [r["step"] for r in out["checkpoints"]] == [0, 3]
  assert len(out["train_loss"]) == 3
  assert (tmp_path / "training_curve.png").exists()


def test_bench_restarts_reports_ratio(tmp_path):
  c = restarts_config.get_config()
  c.model, c.width, c.batch_size, c.restarts = "lenet", 2, 2, 2
  c.iterations, c.warmup, c.conv_impls, c.variants = 1, 1, "xla", "host_loop,vmap"
  out = bench_restarts.run(c, str(tmp_path))
  assert {r["strategy"] for r in out["variants"]} == {"host_loop", "vmap"}
  assert all(r["seconds_per_restart_step"] > 0 for r in out["variants"])
  assert out["default_strategy"] == "host_loop"  # CPU
  saved = _read(tmp_path / "results.json")
  assert saved["host_loop_xla_seconds_per_restart_step"] > 0


def test_bench_speed_reports_roofline(tmp_path):
  c = speed_config.get_config()
  c.model, c.width, c.cases = "lenet", 2, "tiny_b1:batch_size=1"
  c.timed_steps, c.matmul_size = 1, 256
  out = bench_speed.run(c, str(tmp_path))
  row = out["cases"]["tiny_b1"]
  assert row["flops_per_step"] > 0 and row["its_per_s"] > 0
  # On the CPU the roofline takes XLA's count; the jaxpr's is kept beside it.
  assert row["flops_source"] == "xla_cost_analysis"
  assert row["flops_per_step"] == row["xla_flops_per_step"] and row["jaxpr_flops_per_step"] > 0
  # The fraction takes the matmul FLOP/s measured right after the case's steps.
  (peak,) = row["matmul_flops_per_s_rounds"]
  assert peak > 0 and out["rounds"][0]["matmul_flops_per_s"] == peak
  assert out["roofline_fraction_tiny_b1"] == pytest.approx(
      row["flops_per_step"] * row["its_per_s"] / peak)
  assert out["reference_its_per_s_tiny_b1"] is None and out["ratio_its_tiny_b1"] is None
  assert out["torch_flops_per_step_tiny_b1"] is None
  assert "not measured" in out["reference"]
  assert out["ratio_time_to_psnr_tiny_b1"] is None
  c.quality_cases = "nonexistent"
  with pytest.raises(ValueError, match="quality_cases"):
    bench_speed.run(c, str(tmp_path))
  c.quality_cases, c.reference_iterations = "tiny_b1", 0
  with pytest.raises(ValueError, match="reference_iterations"):
    bench_speed.run(c, str(tmp_path))
  c.reference_iterations = 10
  c.quality_cases = ""
  c.reference = "pytorch"
  with pytest.raises(ValueError, match="config.reference"):
    bench_speed.run(c, str(tmp_path))


def test_bench_speed_rounds_take_the_median_of_per_round_ratios(tmp_path, monkeypatch):
  """Alternating rounds: each round's ratio pairs adjacent timings; the median is kept."""
  c = speed_config.get_config()
  c.model, c.width, c.cases = "lenet", 2, "tiny_b1:batch_size=1"
  c.timed_steps, c.matmul_size, c.rounds = 1, 256, 3
  c.reference_python = "fake-python"
  reference_speeds = iter([1.0, 1e6, 1e-6])  # its/s of the reference in rounds 0, 1, 2

  def fake_reference(config, workdir, name, images, labels):
    speed = next(reference_speeds)
    row = {"its_per_s": speed, "seconds_per_step": 1.0 / speed}
    return {"breaching": row, "breaching_error": "", "used": "breaching",
            "torch": {**row, "flops_per_step": 5e9}}

  monkeypatch.setattr(bench_speed, "measure_reference", fake_reference)
  peaks = iter([1e9, 2e9, 3e9, 4e9])  # the run's first matmul, then one after each round
  monkeypatch.setattr(bench_speed, "matmul_flops_per_s", lambda size: next(peaks))
  out = bench_speed.run(c, str(tmp_path))
  rounds = out["rounds"]
  assert out["matmul_flops_per_s"] == 1e9
  assert [r["matmul_flops_per_s"] for r in rounds] == [2e9, 3e9, 4e9]
  assert [r["round"] for r in rounds] == [0, 1, 2]
  ratios = [r["jaxinvert_its_per_s"] / s for r, s in zip(rounds, [1.0, 1e6, 1e-6])]
  assert out["ratio_its_rounds_tiny_b1"] == pytest.approx(ratios)
  assert out["ratio_its_tiny_b1"] == pytest.approx(ratios[0])  # the median round
  assert out["breaching_its_per_s_tiny_b1"] == pytest.approx(1.0)
  assert out["torch_flops_per_step_tiny_b1"] == 5e9
  assert out["jaxinvert_its_per_s_tiny_b1"] == pytest.approx(
      np.median([r["jaxinvert_its_per_s"] for r in rounds]))
  # Each round's roofline fraction divides by that round's own matmul measurement.
  flops = out["cases"]["tiny_b1"]["flops_per_step"]
  fractions = [flops * r["jaxinvert_its_per_s"] / r["matmul_flops_per_s"] for r in rounds]
  assert [r["roofline_fraction"] for r in rounds] == pytest.approx(fractions)
  assert out["roofline_fraction_tiny_b1"] == pytest.approx(np.median(fractions))
  c.rounds = 0
  with pytest.raises(ValueError, match="config.rounds"):
    bench_speed.run(c, str(tmp_path))


def test_benchmarks_cut_short_keep_what_they_measured(tmp_path, monkeypatch):
  """A lease's time limit can kill a benchmark mid-run: the finished cases / rows must
  already be in results.json, marked incomplete; a whole run is marked complete."""
  c = speed_config.get_config()
  c.model, c.width, c.timed_steps, c.matmul_size = "lenet", 2, 1, 256
  c.cases = "first:batch_size=1;second:batch_size=2"
  real = bench_speed.measure_case

  def killed_on_second(config):
    if config.batch_size == 2:
      raise KeyboardInterrupt("the lease ran out")
    return real(config)

  monkeypatch.setattr(bench_speed, "measure_case", killed_on_second)
  with pytest.raises(KeyboardInterrupt):
    bench_speed.run(c, str(tmp_path / "speed"))
  saved = _read(tmp_path / "speed" / "results.json")
  assert saved["complete"] is False
  assert list(saved["cases"]) == ["first"] and saved["jaxinvert_its_per_s_first"] > 0
  monkeypatch.setattr(bench_speed, "measure_case", real)
  c.cases = "first:batch_size=1"
  assert bench_speed.run(c, str(tmp_path / "speed"))["complete"] is True
  assert _read(tmp_path / "speed" / "results.json")["complete"] is True

  s = scaling_config.get_config()
  s.model, s.width, s.devices, s.restarts_per_device = "lenet", 2, "1", "1,2"
  s.steps_per_call = s.iterations = 1
  calls = iter([0.5, KeyboardInterrupt("the lease ran out")])

  def timed(*args, **kwargs):
    out = next(calls)
    if isinstance(out, BaseException):
      raise out
    return out

  monkeypatch.setattr(bench_restarts, "seconds_per_step", timed)
  with pytest.raises(KeyboardInterrupt):
    bench_scaling.run(s, str(tmp_path / "scaling"))
  saved = _read(tmp_path / "scaling" / "results.json")
  assert saved["complete"] is False
  assert saved["rows"] == [{"devices": 1, "restarts_per_device": 1, "copies": 1,
                            "seconds_per_step": 0.5, "restart_its_per_s": 2.0}]


class _Device:
  """Stands in for a jax.Device: what `bench_scaling` reads of one."""

  def __init__(self, process_index, local):
    self.process_index, self.local = process_index, local


def test_scaling_meshes_take_an_equal_share_of_every_process():
  two_hosts = [_Device(p, i) for p in (0, 1) for i in range(4)]
  picked = bench_scaling.mesh_devices(4, two_hosts)
  assert [(d.process_index, d.local) for d in picked] == [(0, 0), (0, 1), (1, 0), (1, 1)]
  c = scaling_config.get_config()
  assert bench_scaling.device_counts(c, two_hosts) == [2, 4, 8]
  c.devices = "2,6"
  assert bench_scaling.device_counts(c, two_hosts) == [2, 6]
  c.devices = "3"
  with pytest.raises(ValueError, match="do not split over the 2 processes"):
    bench_scaling.device_counts(c, two_hosts)
  one_host = [_Device(0, i) for i in range(8)]
  assert [d.local for d in bench_scaling.mesh_devices(3, one_host)] == [0, 1, 2]
  c.devices = ""
  assert bench_scaling.device_counts(c, one_host) == [1, 2, 4, 8]
  # Efficiency is against the smallest mesh measured (the process count on several hosts).
  rows = [{"devices": n, "restarts_per_device": 1, "restart_its_per_s": t}
          for n, t in ((2, 10.0), (4, 15.0), (8, 40.0))]
  assert bench_scaling.efficiency(rows) == {2: {1: 1.0}, 4: {1: 0.75}, 8: {1: 1.0}}


def test_time_to_psnr_stops_at_target_or_budget():
  c = speed_config.get_config()
  c.model, c.width, c.batch_size, c.image_size = "lenet", 2, 1, 8
  c.optimizer, c.iterations, c.log_every, c.progress = "adam", 50, 2, False
  images = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype(np.float32)
  labels = np.array([3])
  reached = bench_speed.time_to_psnr(c, images, labels, target=-1e9, max_seconds=60.0)
  assert reached["seconds_to_target"] == reached["curve"][0]["seconds"] > 0
  assert len(reached["curve"]) == 1 and reached["curve"][0]["step"] == 2
  with pytest.raises(ValueError, match="max_seconds"):
    bench_speed.time_to_psnr(c, images, labels, target=1.0, max_seconds=0.0)
  never = bench_speed.time_to_psnr(c, images, labels, target=1e9, max_seconds=0.5)
  assert never["seconds_to_target"] is None
  seconds = [row["seconds"] for row in never["curve"]]
  assert seconds == sorted(seconds) and seconds[-1] >= 0.5
  assert never["final_psnr"] == never["curve"][-1]["psnr"] < 1e9


def test_reference_curve_reads_breachings_trajectory(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
  labels = np.array([1, 2])
  noise = [0.4, 0.1, 0.2]  # PSNR rises, then falls
  snapshots = np.stack([np.clip(images + n * rng.standard_normal(images.shape), 0, 1)
                        for n in noise]).astype(np.float32)
  path = str(tmp_path / "case_trajectory.npz")
  np.savez(path, steps=np.array([10, 20, 30]), seconds=np.array([1.0, 2.0, 3.0]),
           images=snapshots)
  curve, first = bench_speed.reference_curve(path, images, labels, final_psnr=18.0)
  assert [c["step"] for c in curve] == [10, 20, 30]
  psnrs = [c["psnr"] for c in curve]
  assert psnrs[1] > psnrs[2] > psnrs[0]
  assert first == 20 and psnrs[0] < 18.0 <= psnrs[1]
  _, never = bench_speed.reference_curve(path, images, labels, final_psnr=99.0)
  assert never is None
  assert bench_speed.reference_curve(str(tmp_path / "absent.npz"), images, labels,
                                     final_psnr=1.0) == ([], None)


def test_bench_fedavg_memory_remat_saves_memory(tmp_path):
  c = memory_config.get_config()
  c.batch_size, c.local_batch_size, c.epochs, c.repeats = 4, 1, "2", 1
  out = bench_fedavg_memory.run(c, str(tmp_path))
  by_remat = {r["remat"]: r for r in out["rows"]}
  assert by_remat[True]["temp_bytes"] <= by_remat[False]["temp_bytes"]
  assert (tmp_path / "memory.png").exists()


def _validate_label_benchmark(config):
  cells = restore_labels.validate(config)
  assert cells and all(isinstance(c, dict) for c in cells)


def _validate_sweep(config):
  cells = common.parse_cells(config)
  assert len(cells) > 1, "a sweep config with one cell is a plain reconstruction"
  for cell in cells:
    reconstruct.validate(common.apply_cell(config, cell))


def _validate_speed_cases(config):
  cases = bench_speed.parse_cases(config.cases)
  assert cases
  for _, overrides in cases:
    reconstruct.validate(bench_speed.with_overrides(config, overrides))


# What each script checks before it runs, applied to every config that names it. None:
# the script has no validation of its own, and the config only has to load.
_VALIDATORS = {
    "reconstruct": reconstruct.validate,
    "sweep": _validate_sweep,
    "restore_labels": _validate_label_benchmark,
    "rescore_labels": rescore_labels.validate,
    "train_victim": common.validate_victim_and_data,
    "bench_restarts": reconstruct.validate,
    "bench_scaling": bench_scaling.validate,
    "bench_speed": _validate_speed_cases,
    "bench_fedavg_memory": None,
}
_SHARED_CONFIGS = {"__init__", "base"}     # building blocks, not run by any script


def _config_names() -> list[str]:
  return sorted(name[:-3] for name in os.listdir(common.CONFIGS)
                if name.endswith(".py") and name[:-3] not in _SHARED_CONFIGS)


def test_config_discovery_finds_the_configs():
  """The configs are found on disk, so a new one is checked without editing this test."""
  assert len(_config_names()) >= 20
  assert {"labels_grid", "convnet_b8", "fedavg_epochs", "bench_speed"} <= set(_config_names())


@pytest.mark.parametrize("name", _config_names())
def test_config_validates_for_its_script(name):
  """Each config's docstring names the script it configures (its command), and that
  script's own checks accept it: a broken config fails here rather than when run."""
  module = importlib.import_module(f"experiments.configs.{name}")
  scripts = set(re.findall(r"python -m experiments\.(\w+)", module.__doc__ or ""))
  assert len(scripts) == 1, f"{name}.py's docstring should give the command of one script"
  script = scripts.pop()
  assert script in _VALIDATORS, f"{name}.py runs experiments.{script}, which this test lacks"
  config = module.get_config()
  if _VALIDATORS[script] is not None:
    _VALIDATORS[script](config)   # raises, naming the field, on a config the script would refuse


def test_default_label_config_measures_the_library_default():
  """results.json's "default" names labels.DEFAULT_METHOD; the default run must measure it."""
  methods = labels_config.get_config().methods.split(",")
  assert labels.DEFAULT_METHOD.value in methods


@pytest.mark.parametrize("field,value", [("trials", 0), ("train_steps", -1), ("num_dummies", -1),
                                         ("speedup", -1.0)])
def test_restore_labels_names_a_count_out_of_range(field, value):
  config = labels_config.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=f"config.{field}"):
    restore_labels.validate(config)


def test_restore_labels_names_an_unknown_fit_space():
  config = labels_config.get_config()
  config.fit_space = "features"
  with pytest.raises(ValueError, match="config.fit_space"):
    restore_labels.validate(config)


@pytest.mark.parametrize("field,value,setting", [("fit_margin", 0.5, "fedsgd"),
                                                 ("fit_margin", 10.0, "fedavg"),
                                                 ("fit_beyond_half", True, "fedavg"),
                                                 ("fit_support_limit", -2, "fedsgd")])
def test_restore_labels_names_a_fit_option_it_cannot_apply(field, value, setting):
  config = labels_config.get_config()
  config.setting, config[field] = setting, value
  with pytest.raises(ValueError, match=f"config.{field}"):
    restore_labels.validate(config)
  config.setting = "fedsgd"
  if field == "fit_beyond_half" or value >= 1:  # the FedSGD run accepts the option
    restore_labels.validate(config)
  if field == "fit_support_limit":  # -1 (the library's), 0 (off) and limits are fine
    config[field] = 0
    restore_labels.validate(config)


def test_bench_speed_refuses_to_time_a_failing_attack(tmp_path, monkeypatch):
  """A step whose gradient is not finite must not be reported as a speed."""
  c = speed_config.get_config()
  c.model, c.width, c.cases = "lenet", 2, "tiny_b1:batch_size=1"
  c.timed_steps, c.matmul_size = 1, 256
  real = bench_speed._case_attack

  def failing(config, images, labels):
    attack, key = real(config, images, labels)
    def step(state, target=None):
      state, out = attack.step(state, target)
      return state._replace(failed=jnp.ones((), bool)), out
    return attack._replace(step=step), key

  monkeypatch.setattr(bench_speed, "_case_attack", failing)
  with pytest.raises(FloatingPointError, match="non-finite"):
    bench_speed.run(c, str(tmp_path))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_rerun_loads_the_compiled_attack_from_the_cache(tmp_path):
  """`--compilation_cache_dir`: the second run of a script compiles nothing new and gives
  the same numbers."""
  cache = tmp_path / "cache"
  env = {k: v for k, v in os.environ.items() if k != "JAXINVERT_COMPILATION_CACHE"}
  env["PYTHONPATH"] = ROOT
  # JAX writes only programs that took >= 1 s to compile; a program near that line (the
  # evaluation, ~1 s on a 2-core machine) was written by one run and not the other.
  # Caching every program makes the listing a fair check of "nothing compiled anew".
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

  def run(name):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.reconstruct", f"--workdir={tmp_path / name}",
         f"--compilation_cache_dir={cache}", "--config.iterations=3",
         "--config.log_every=3", "--config.progress=False", "--config.width=3",
         "--config.image_size=16"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return _read(tmp_path / name / "results.json")

  first = run("first")
  entries = sorted(os.listdir(cache))
  assert any(e.startswith("jit_step-") for e in entries), entries  # the attack's step
  second = run("second")
  assert sorted(os.listdir(cache)) == entries  # every program came from the cache
  assert second["loss_curve"] == first["loss_curve"] and second["psnr"] == first["psnr"]


def test_compilation_cache_default_and_opt_out(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXINVERT_COMPILATION_CACHE", str(tmp_path / "env"))
  assert common.default_compilation_cache_dir() == str(tmp_path / "env")
  monkeypatch.delenv("JAXINVERT_COMPILATION_CACHE")
  assert common.default_compilation_cache_dir() == os.path.expanduser(
      os.path.join("~", ".cache", "jaxinvert", "xla"))
  # A cache configured before (here: the test harness's) is left alone, and '' is off.
  before = jax.config.jax_compilation_cache_dir
  assert before
  common.enable_compilation_cache(str(tmp_path / "other"))
  common.enable_compilation_cache("")
  assert jax.config.jax_compilation_cache_dir == before
  assert not (tmp_path / "other").exists()
