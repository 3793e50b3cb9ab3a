r"""Reconstruct a client's images (and labels) from what it shares in FedSGD or FedAvg.

  python -m experiments.reconstruct --workdir=workdirs/demo
  python -m experiments.reconstruct --config=experiments/configs/lenet_b4.py \
      --config.seed=3 --workdir=workdirs/lenet_b4

Writes ``results.json`` (config, psnr, ssim, label_accuracy, labels_exact, seconds,
per-image PSNR after Hungarian matching, chosen restart and hypothesis, loss curve),
``reconstruction.png`` (originals over the reconstructions) and ``loss_curve.png``.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from experiments import common
from jaxinvert import attack as attack_lib
from jaxinvert import labels as labels_lib
from jaxinvert import counts, data, metrics, priors, runner, simulators, victim, viz
from jaxinvert.objectives import Distance



def validate(config) -> None:
  """Rejects nonsense before any work; every error names its config field."""
  common.validate_victim_and_data(config)
  common.validate_setting(config)
  for field in ("iterations", "restarts", "hypotheses", "label_arrangements", "log_every"):
    minimum = 0 if field == "iterations" else 1
    if config[field] < minimum:
      common.fail(field, f"must be >= {minimum}, got {config[field]}")
  common.choice(config, "label_source", ("restored", "true", "given"))
  common.choice(config, "optimizer", [o.value for o in attack_lib.Optimizer])
  common.choice(config, "distance", [d.value for d in Distance])
  common.choice(config, "box", [b.value for b in priors.Box])
  common.choice(config, "init", [i.value for i in attack_lib.InitDist])
  common.choice(config, "tv_kind", [t.value for t in priors.TV])
  if config.strategy:
    common.choice(config, "strategy", [s.value for s in runner.Strategy])
  for field in ("tv", "bn", "group", "lr", "tol", "patience", "checkpoint_every",
                "steps_per_call"):
    if config[field] < 0:
      common.fail(field, f"must be >= 0, got {config[field]}")
  if config.lr == 0:
    common.fail("lr", "must be positive")
  if config.bn and not common.build_model(config).has_batchnorm:
    why = " with config.batchnorm=False" if config.model == "convnet" else ""
    common.fail("bn", f"the BatchNorm prior needs a model with BatchNorm; {config.model}{why} "
                "has none")
  if config.strategy and config.distributed and config.strategy != runner.Strategy.SHARDED.value:
    common.fail("strategy", f"a multi-host run (distributed=True) needs 'sharded' or '' (every "
                f"process would otherwise run the whole attack), got {config.strategy!r}")
  if not config.distributed and (config.coordinator_address or config.num_processes
                                 or config.process_id >= 0):
    common.fail("distributed", "coordinator_address, num_processes and process_id are only "
                "read with distributed=True")
  if config.checkpoint_every and config.checkpoint_every % config.log_every:
    common.fail("checkpoint_every", f"must be a multiple of log_every ({config.log_every})")
  if config.label_arrangements > 1 and not (
      config.setting == "fedavg" and config.fedavg_method == "unroll"
      and config.fedavg_order == "known" and config.label_source == "restored"):
    common.fail("label_arrangements", "places restored labels on a known FedAvg order: it needs "
                "setting=fedavg, fedavg_method=unroll, fedavg_order=known, "
                "label_source=restored")
  if config.label_source == "given":
    given = [s for s in config.labels.split(",") if s.strip()]
    if len(given) != config.batch_size:
      common.fail("labels", f"needs {config.batch_size} comma-separated labels, got "
                  f"{config.labels!r}")
    classes = config.get("head_classes", 0) or common.num_classes(config)
    if not all(s.strip().isdigit() and int(s) < classes for s in given):
      common.fail("labels", f"needs integers in [0, {classes}) (the victim's classes), got "
                  f"{config.labels!r}")
  if config.label_method != "auto":
    common.choice(config, "label_method", [m.value for m in labels_lib.Method])
  if config.wrong_labels and config.label_source != "true":
    common.fail("wrong_labels", "changes the true labels: it needs label_source=true")
  if not 0 <= config.wrong_labels <= config.batch_size:
    common.fail("wrong_labels", f"must be between 0 and batch_size ({config.batch_size}), "
                f"got {config.wrong_labels}")
  if config.label_source != "restored" and config.hypotheses != 1:
    common.fail("hypotheses", "label hypotheses need label_source=restored")


def _hypotheses(config, model, variables, update, true_labels, key,
                order=None) -> tuple[np.ndarray, dict]:
  """``[H, B]`` label hypotheses for the attack, and what the label step reports.

  With ``config.label_arrangements > 1`` (FedAvg, known client order) every count vector
  is placed on the batch positions in up to that many ways that the client's
  mini-batches tell apart (`simulators.label_arrangements`)."""
  if config.label_source == "true":
    if not config.wrong_labels:
      return np.asarray(true_labels)[None], {"method": "true"}
    wrong = data.mislabel(key, true_labels, num_wrong=config.wrong_labels,
                          num_classes=model.num_classes)
    return wrong[None], {"method": f"true, {config.wrong_labels} changed"}
  if config.label_source == "given":
    given = np.array([int(s) for s in config.labels.split(",") if s.strip()], np.int32)
    return given[None], {"method": "given"}
  method, estimate = common.restore_labels(config, model, variables, update, key)
  # Every count vector where there are at most H (small heads), else the H best; a
  # vector repeated to fill the static shape is tried once.
  hyps = counts.distinct(counts.candidates(estimate.scores, num_images=config.batch_size,
                                          num=config.hypotheses))
  placed = [metrics.counts_to_labels(h)[None] for h in hyps]
  if config.label_arrangements > 1:
    placed = [simulators.label_arrangements(
        p[0], order=np.asarray(order), local_batch_size=common.local_batch_size(config),
        max_num=config.label_arrangements) for p in placed]
  placed = np.concatenate(placed)
  return placed, {
      "method": method, "scores": np.asarray(estimate.scores),
      "counts": np.asarray(estimate.counts), "hypotheses": hyps, "placements": placed}


def build_attack(config, model, variables, update, order, batch_size):
  """The simulate/target pair of the setting, the priors and the optimizer."""
  steps = 1
  if config.setting == "fedsgd":
    simulate, target = simulators.fedsgd(model.apply, variables), update
    random_sim = False
  else:
    delta = victim.weight_delta(variables, update)
    steps = victim.local_steps(batch_size, local_epochs=config.local_epochs,
                               local_batch_size=common.local_batch_size(config))
    if config.fedavg_method == "approx":
      simulate = simulators.fedsgd(model.apply, variables)
      target = simulators.fedavg_approx_target(delta, local_lr=config.local_lr, steps=steps)
      random_sim = False
    else:
      assumption = simulators.OrderAssumption(config.fedavg_order)
      simulate = simulators.fedavg_unroll(
          model.apply, variables, local_epochs=config.local_epochs,
          local_batch_size=common.local_batch_size(config), local_lr=config.local_lr,
          order=assumption, known_order=order, order_samples=config.fedavg_order_samples,
          remat=config.remat, unroll=common.scan_unroll(config))
      target = delta
      random_sim = assumption != simulators.OrderAssumption.KNOWN
  prior_terms = [priors.total_variation(config.tv, kind=priors.TV(config.tv_kind)),
                 priors.group_consistency(config.group)]
  if config.bn:
    prior_terms.append(priors.bn_statistics(config.bn, apply_fn=model.apply,
                                            variables=variables))
  optimizer = attack_lib.make_optimizer(attack_lib.Optimizer(config.optimizer),
                                        learning_rate=config.lr, iterations=config.iterations)
  return attack_lib.matching_attack(
      simulate=simulate, target=target, batch_size=batch_size, image_shape=model.image_shape,
      optimizer=optimizer, distance=Distance(config.distance), priors=prior_terms,
      box=priors.Box(config.box), init_dist=attack_lib.InitDist(config.init),
      simulate_is_random=random_sim)


def run(config, workdir: str) -> dict:
  """Runs one reconstruction experiment and writes its outputs to ``workdir``."""
  validate(config)
  # Every process runs the same program on its share of the copies and gets the same
  # (replicated) answer; process 0 alone writes, so that hosts sharing the workdir do not
  # race. Checkpoints are written by every process (orbax: each its own shards).
  primary = common.start_processes(config)
  os.makedirs(workdir, exist_ok=True)
  key = jax.random.key(config.seed)
  model_key, data_key, client_key, label_key, attack_key = jax.random.split(key, 5)
  with common.Timer() as timer:
    model, variables = common.build_victim(config, model_key)
    images, true_labels = common.client_batch(config, data_key)
    if config.setting == "fedsgd":
      update, order = common.shared_update(config, model, variables, images, true_labels,
                                           client_key), None
    else:
      update, order = common.shared_update(config, model, variables, images, true_labels,
                                           client_key)
    with common.Timer() as label_timer:
      hyps, label_info = _hypotheses(config, model, variables, update, true_labels,
                                     label_key, order)
    label_info["seconds"] = label_timer.seconds  # compilation included
    attack = build_attack(config, model, variables, update, order, config.batch_size)
    result = runner.run(
        attack, key=attack_key, hypotheses=hyps, restarts=config.restarts,
        iterations=config.iterations,
        strategy=runner.Strategy(config.strategy) if config.strategy else None,
        steps_per_call=config.steps_per_call or None,
        log_every=config.log_every,
        checkpoint_dir=(os.path.join(workdir, "checkpoints") if config.checkpoint_every
                        else None),
        checkpoint_every=config.checkpoint_every or None,
        patience=config.patience or None, tol=config.tol,
        progress=config.progress and primary,
        description=f"{config.model} B={config.batch_size}")
  if result.resumed_from and primary:
    print(f"jaxinvert: resumed from the checkpoint of step {result.resumed_from} in "
          f"{os.path.join(os.path.abspath(workdir), 'checkpoints')}", flush=True)
  report = metrics.reconstruction_report(result.images, images, result.labels, true_labels)
  curve = result.curve[:, result.hypothesis, result.restart]
  results = {
      "psnr": report["psnr"], "ssim": report["ssim"],
      "label_accuracy": report["label_accuracy"], "labels_exact": report["labels_exact"],
      "seconds": timer.seconds, "attack_seconds": result.seconds, "steps": result.steps,
      "resumed_from_step": result.resumed_from,
      "per_image_psnr": report["per_image_psnr"], "per_image_ssim": report["per_image_ssim"],
      "blend": report["blend"],
      "matching": report["matching"], "true_labels": np.sort(true_labels),
      "restored_labels": np.sort(result.labels),
      "label_restoration": label_info,
      "chosen_hypothesis": result.hypothesis, "chosen_restart": result.restart,
      "final_losses": result.losses, "loss_curve": curve,
      "backend": jax.default_backend(), "devices": jax.device_count(),
      "config": config,
  }
  if not primary:
    common.announce_secondary(workdir)
    return results
  files = [common.write_results(workdir, results)]
  perm = np.asarray(report["matching"])
  files.append(os.path.join(workdir, "reconstruction.png"))
  viz.image_rows(files[-1], {"original": images, "reconstruction": result.images[perm]},
                 captions={"original": [str(int(l)) for l in true_labels],
                           "reconstruction": [f"{p:.1f} dB" for p in report["per_image_psnr"]]},
                 title=f"{config.model}, {config.setting}, B={config.batch_size}: "
                       f"PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.3f}")
  files.append(os.path.join(workdir, "loss_curve.png"))
  viz.curves(files[-1], {"objective": (np.arange(1, len(curve) + 1), curve)},
             xlabel="iteration", ylabel="objective (chosen restart)", logy=True)
  common.announce(workdir, files)
  print(f"jaxinvert: PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f}, "
        f"label accuracy {report['label_accuracy']:.3f}, {timer.seconds:.1f} s", flush=True)
  return results



if __name__ == "__main__":
  common.script_main(run, default_config="lenet_b1.py",
                     description="Reconstruction config (a get_config() file).")
