r"""Benchmark zero-shot label restoration: every method on the same client batches.

  python -m experiments.restore_labels --config=experiments/configs/labels.py \
      --workdir=workdirs/labels

For each cell (the config, or each ';'-separated override set of ``config.cells``) it
samples ``trials`` client batches, computes what each client shares (FedSGD gradient or
FedAvg weights, vmapped over trials), runs every method of ``config.methods`` (vmapped
over trials) and scores the count vectors against the truth. Writes ``results.json``
and a figure.
"""

from __future__ import annotations

import copy
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from experiments import common, train_victim
from jaxinvert import labels, metrics, models, victim, viz


_DOMAINS = {models.Activation.RELU: labels.FeatureDomain.NONNEGATIVE,
            models.Activation.SOFTPLUS: labels.FeatureDomain.NONNEGATIVE,
            models.Activation.SIGMOID: labels.FeatureDomain.UNIT}


def feature_domain(model) -> labels.FeatureDomain:
  return _DOMAINS[model.module.activation]


def validate(config) -> list[dict]:
  cells = common.parse_cells(config)
  if config.trials <= 0:
    common.fail("trials", f"must be positive, got {config.trials}")
  if config.train_steps < 0:
    common.fail("train_steps", f"must be >= 0, got {config.train_steps}")
  if config.num_dummies < 0:
    common.fail("num_dummies", f"must be 0 (K dummies) or positive, got {config.num_dummies}")
  for method in config.methods.split(","):
    if method not in [m.value for m in labels.Method]:
      common.fail("methods", f"unknown method {method!r}; choose from "
                  f"{[m.value for m in labels.Method]}")
  common.choice(config, "stats_point", [s.value for s in labels.StatsPoint])
  if config.speedup < 0:
    common.fail("speedup", f"must be 0 (the library's) or positive, got {config.speedup}")
  common.choice(config, "dummy_dist",
                ["default"] + [d.value for d in labels.DummyDist])
  common.choice(config, "fit_space", [s.value for s in labels.FitSpace])
  if config.fit_support_limit < -1:
    common.fail("fit_support_limit", f"must be -1 (the library's), 0 (off) or positive, "
                f"got {config.fit_support_limit}")
  if config.fit_margin != 0 and not config.fit_margin >= 1:
    common.fail("fit_margin", f"must be 0 (off) or at least 1, got {config.fit_margin}")
  for cell in cells:
    merged = common.apply_cell(config, cell)
    common.validate_victim_and_data(merged)
    common.validate_setting(merged)
    if merged.setting != "fedsgd":
      if merged.fit_margin:
        common.fail("fit_margin", "applies to fedsgd; on a FedAvg update FIT always keeps "
                    "only a clear winner (labels.FEDAVG_FIT_MARGIN)")
      if merged.fit_beyond_half:
        common.fail("fit_beyond_half", "applies to fedsgd (not measured on FedAvg)")
  return cells


def victim_for(config, cache: dict):
  """The victim at ``config.train_steps`` (trained once per model config, then cached).

  Returns:
    ``(model, variables, training)``: ``training`` is ``{"train_steps": S}`` plus, for a
    trained victim, `train_victim.train`'s training loss and accuracy at step S, so that
    a table can say how far the victim had learned.
  """
  fields = ("model", "width", "activation", "batchnorm", "hidden", "dataset", "image_size",
            "num_classes", "head_classes", "seed", "train_batch_size", "train_lr", "momentum",
            "train_pool")
  key = tuple(config[f] for f in fields) + (config.train_steps,)
  if key not in cache:
    if config.train_steps == 0:
      model, variables = common.build_victim(config,
                                             jax.random.split(jax.random.key(config.seed))[0])
      cache[key] = (model, variables, {"train_steps": 0})
    else:
      train_config = copy.deepcopy(config)
      train_config.eval_pool = 0
      model, saved, history = train_victim.train(train_config, save_at=[config.train_steps],
                                                 progress=config.progress)
      at_step = next(e for e in history["saved"] if e["step"] == config.train_steps)
      cache[key] = (model, saved[config.train_steps],
                    {"train_steps": config.train_steps, "train_loss": at_step["train_loss"],
                     "train_accuracy": at_step["train_accuracy"]})
  return cache[key]


def run_cell(config, cache: dict) -> dict:
  model, variables, training = victim_for(config, cache)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  batch_keys = jax.random.split(key, config.trials)
  batches = [common.client_batch(config, k) for k in batch_keys]
  images = jnp.asarray(np.stack([b[0] for b in batches]))
  true = np.stack([b[1] for b in batches])
  num_classes = model.num_classes
  true_counts = np.stack([np.bincount(t, minlength=num_classes) for t in true])
  k = config.batch_size
  if config.setting == "fedsgd":
    updates = jax.jit(jax.vmap(lambda x, y: victim.fedsgd_update(model.apply, variables, x, y)))(
        images, jnp.asarray(true))
  else:
    steps = victim.local_steps(k, local_epochs=config.local_epochs,
                               local_batch_size=common.local_batch_size(config))
    order_keys = jax.random.split(jax.random.fold_in(key, 2), config.trials)
    updates = jax.jit(jax.vmap(lambda x, y, kk: victim.fedavg_update(
        model.apply, variables, x, y, local_epochs=config.local_epochs,
        local_batch_size=common.local_batch_size(config), local_lr=config.local_lr,
        key=kk if config.client_shuffles else None)))(images, jnp.asarray(true), order_keys)
  dummy_keys = jax.random.split(jax.random.fold_in(key, 3), config.trials)
  out = {}
  for name in config.methods.split(","):
    method = labels.Method(name)
    kwargs = dict(method=method, features_fn=model.features, num_images=k,
                  image_shape=model.image_shape, num_dummies=config.num_dummies or None,
                  dummy_dist=(None if config.dummy_dist == "default"
                              else labels.DummyDist(config.dummy_dist)),
                  feature_domain=feature_domain(model))
    if config.setting == "fedsgd":
      kwargs["fit_space"] = labels.FitSpace(config.fit_space)
      kwargs["fit_margin"] = config.fit_margin or None
      kwargs["fit_beyond_half"] = config.fit_beyond_half
    if config.fit_support_limit >= 0:
      kwargs["fit_support_limit"] = config.fit_support_limit
    if method == labels.Method.GRADINVERSION and k > num_classes:
      out[name] = {"skipped": f"GradInversion assumes K <= N ({k} > {num_classes})"}
      continue
    start = time.perf_counter()
    if config.setting == "fedsgd":
      fn = jax.jit(jax.vmap(lambda kk, u: labels.restore(kk, update=u, variables=variables,
                                                         **kwargs).counts))
    else:
      fn = jax.jit(jax.vmap(lambda kk, u: labels.restore_fedavg(
          kk, start=variables, end=u, local_lr=config.local_lr, local_steps=steps,
          stats_point=labels.StatsPoint(config.stats_point), speedup=config.speedup or None,
          **kwargs).counts))
    counts = np.asarray(fn(dummy_keys, updates))
    seconds = time.perf_counter() - start
    per_trial = []
    for c, t in zip(counts, true):
      predicted = metrics.counts_to_labels(c)
      per_trial.append({"exact": metrics.labels_exact(predicted, t),
                        "label_accuracy": metrics.label_accuracy(predicted, t),
                        "counts": c.tolist()})
    out[name] = {
        "exact_match_rate": float(np.mean([p["exact"] for p in per_trial])),
        "label_accuracy": float(np.mean([p["label_accuracy"] for p in per_trial])),
        "seconds": seconds, "per_trial": per_trial}
  cell = {"true_counts": true_counts.tolist(), "methods": out, "victim": training}
  if config.setting == "fedavg":
    cell["fitted_fraction"] = fitted_fraction(model, variables, updates, images, true_counts)
    gradients = jax.vmap(lambda end: labels.fedavg_gradient(
        victim.weight_delta(variables, end), local_lr=config.local_lr, steps=steps))(updates)
  else:
    gradients = updates
  flagged = np.asarray(jax.jit(jax.vmap(lambda g: labels.certain_classes(
      g, k, feature_domain(model))))(gradients))
  cell["sign_rule"] = sign_rule_summary(flagged, true_counts)
  return cell


def sign_rule_summary(flagged: np.ndarray, true_counts: np.ndarray) -> dict:
  """How the sign rule's flagged classes (`labels.certain_classes`) compare with the
  batches' classes: a diagnostic that reads the truth, not a method.

  Args:
    flagged: ``[trials, N]`` 0/1.
    true_counts: ``[trials, N]``.

  Returns:
    Per trial the number of flagged and of present classes; the rates of batches whose
    flagged set lies within their classes (``subset_rate``, 1 by the rule's argument)
    and equals them (``complete_rate``); and ``one_flagged_misread``, the batches with
    one flagged class but two or more classes, which `labels.with_present`'s one-class
    rule misreads as a one-class batch unless the closed forms overrule it
    (`labels.one_class_overruled`; the count does not look at them), and 0 on 2-class
    heads, where the rule does not apply (`labels.one_class_rule_applies`).
  """
  present = true_counts > 0
  flagged = flagged > 0
  num_flagged, num_present = flagged.sum(1), present.sum(1)
  return {"flagged": num_flagged.tolist(), "classes": num_present.tolist(),
          "subset_rate": float(np.mean(np.all(flagged <= present, axis=1))),
          "complete_rate": float(np.mean(np.all(flagged == present, axis=1))),
          "one_flagged_misread": (int(np.sum((num_flagged == 1) & (num_present > 1)))
                                  if labels.one_class_rule_applies(flagged.shape[1]) else 0)}


def fitted_fraction(model, start, ends, images, true_counts) -> float:
  """How far local training moved the batch's softmax mass towards its labels.

  A diagnostic of the FedAvg setting (it reads the private batch), not a label method.

  Args:
    model: the victim.
    start: its variables before local training.
    ends: the trials' variables after it, stacked on a leading axis.
    images: the trials' batches, ``[trials, B, H, W, C]``.
    true_counts: ``[trials, N]``.

  Returns:
    The mean over trials of the projection of S_T - S_0 on c - S_0, over |c - S_0|^2,
    with S the summed softmax of the real images at the start / end weights and c the
    true counts: 0 = the client's predictions did not move, 1 = it fitted its batch.
  """
  def mass(variables, x):
    return jax.nn.softmax(model.apply(variables, x)[0]).sum(axis=0)

  s0 = np.asarray(jax.jit(jax.vmap(mass, in_axes=(None, 0)))(start, images))
  s1 = np.asarray(jax.jit(jax.vmap(mass))(ends, images))
  toward = true_counts - s0
  return float(np.mean(np.sum((s1 - s0) * toward, -1)
                       / np.maximum(np.sum(toward ** 2, -1), 1e-12)))


def run(config, workdir: str) -> dict:
  cells = validate(config)
  os.makedirs(workdir, exist_ok=True)
  cache, results = {}, []
  with common.Timer() as timer:
    for cell in tqdm.tqdm(cells, desc="cells", disable=not config.progress or len(cells) == 1):
      merged = common.apply_cell(config, cell)
      results.append({"cell": cell, **run_cell(merged, cache)})
  summary = {"config": config, "default": labels.DEFAULT_METHOD.value,
             "seconds": timer.seconds, "backend": jax.default_backend()}
  methods = config.methods.split(",")
  files = []
  if len(results) == 1:
    summary["methods"] = results[0]["methods"]
    summary["true_counts"] = results[0]["true_counts"]
    if "fitted_fraction" in results[0]:
      summary["fitted_fraction"] = results[0]["fitted_fraction"]
    summary["sign_rule"] = results[0]["sign_rule"]
    summary["victim"] = results[0]["victim"]
    shown = [m for m in methods if "skipped" not in summary["methods"][m]]
    files.append(os.path.join(workdir, "labels.png"))
    viz.bars(files[-1], {"exact count vector": [summary["methods"][m]["exact_match_rate"]
                                                for m in shown],
                         "label accuracy": [summary["methods"][m]["label_accuracy"]
                                            for m in shown]}, shown,
             title=f"{config.model}, {config.setting}, B={config.batch_size}, "
                   f"{config.label_dist}, {config.train_steps} training steps")
  else:
    summary["cells"] = results
    table = {m: [r["methods"][m].get("label_accuracy") for r in results] for m in methods}
    summary["table"] = {"cells": [r["cell"] for r in results], "label_accuracy": table,
                        "exact_match_rate": {m: [r["methods"][m].get("exact_match_rate")
                                                 for r in results] for m in methods}}
    if config.setting == "fedavg":
      summary["table"]["fitted_fraction"] = [r["fitted_fraction"] for r in results]
    summary["table"]["sign_rule_complete_rate"] = [r["sign_rule"]["complete_rate"]
                                                   for r in results]
    if all(set(r["cell"]) == {"label_dist"} for r in results):  # the duplicates sweep
      dups = [int(r["cell"]["label_dist"].split(":")[1]) - 1 for r in results]
      files.append(os.path.join(workdir, "labels_vs_duplicates.png"))
      viz.curves(files[-1], {m: (dups, [100 * (a or 0) for a in table[m]]) for m in methods
                             if all(a is not None for a in table[m])},
                 xlabel="duplicate labels in a batch of 16", ylabel="label accuracy (%)",
                 markers=True, title=f"{config.model}, {config.train_steps} training steps")
    else:
      shown = [m for m in methods if all(r is not None for r in summary["table"]
                                         ["exact_match_rate"][m])]
      files.append(os.path.join(workdir, "labels_cells.png"))
      viz.bars(files[-1], {m: summary["table"]["exact_match_rate"][m] for m in shown},
               [_cell_name(r["cell"]) for r in results],
               ylabel="exact count vectors", title=f"{config.model}, {config.setting}, "
               f"{config.train_steps} training steps")
  files.insert(0, common.write_results(workdir, summary))
  common.announce(workdir, files)
  print_table(results, methods)
  return summary


def print_table(results, methods) -> None:
  width = max(len(_cell_name(r["cell"])) for r in results) + 2
  fitted = all("fitted_fraction" in r for r in results)
  print("cell".ljust(width) + "".join(m[:13].rjust(14) for m in methods)
        + ("fitted".rjust(8) if fitted else ""))
  for r in results:
    row = []
    for m in methods:
      entry = r["methods"][m]
      row.append("skipped" if "skipped" in entry else
                 f"{entry['exact_match_rate']:.2f}/{entry['label_accuracy']:.3f}")
    print(_cell_name(r["cell"]).ljust(width) + "".join(v.rjust(14) for v in row)
          + (f"{r['fitted_fraction']:8.2f}" if fitted else ""))
  print("(exact count-vector rate / label accuracy"
        + ("; fitted: `fitted_fraction`)" if fitted else ")"), flush=True)
  rules = [r["sign_rule"] for r in results]
  print(f"sign rule: flagged set = batch's classes in "
        f"{sum(len(s['flagged']) * s['complete_rate'] for s in rules):.0f} of "
        f"{sum(len(s['flagged']) for s in rules)} batches, within them in "
        f"{sum(len(s['flagged']) * s['subset_rate'] for s in rules):.0f}; one class flagged "
        f"in {sum(int(np.sum(np.asarray(s['flagged']) == 1)) for s in rules)}, of which "
        f"{sum(s['one_flagged_misread'] for s in rules)} hold two or more classes (misread "
        f"by the one-class rule unless the closed forms overrule it)", flush=True)


def _cell_name(cell: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in cell.items()) or "config"


#: jax 0.10.2's XLA:CPU deadlocked (every thread idle, the result never ready) running
#: `fit` on a 1000-output head vmapped over trials: 4 of 4 runs (2 or 8 trials, also with
#: --xla_cpu_multi_thread_eigen=false). Without its concurrency-optimized scheduler the
#: same program finished. The cause, jaxlib's batched LAPACK kernels waiting on XLA's
#: thread pool when several run at once, was found later; FIT's programs now order their
#: LAPACK calls (`label_fit.after`) and the flag stays as a second guard (docs/labels.md,
#: "Wide heads"). Scripts only; see `labels.restore`.
XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


if __name__ == "__main__":
  common.script_main(run, default_config="labels.py",
                     description="Label benchmark config.", xla_flags=XLA_FLAGS)
