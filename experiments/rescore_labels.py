r"""Label counts re-scored by the attack's matching loss, against the last layer's answer.

  python -m experiments.rescore_labels --config=experiments/configs/labels_rescore.py \
      --workdir=workdirs/labels_rescore

Where the victim is confident (trained, even briefly) the closed forms of
`jaxinvert.labels` miss the batch's softmax mass and their counts are wrong, most of
all on small heads (docs/labels.md). The reconstruction attack sees the whole update,
not only its last layer, and Geng et al. (arXiv 2110.09074) found that one wrong label
keeps it from matching. This script measures whether that finding can choose the
counts: per client batch it runs the attack once per candidate count vector
(`counts.candidates` of SELECT's scores: every vector on small heads and batches, else
the top ``hypotheses``), all in one `runner.run`, and answers the vector whose copy
ends with the lowest matching loss. FedSGD only.

Per cell ``results.json`` holds SELECT's and the attack's exact-match rate and label
accuracy, how often the truth was among the candidates, and per trial every
candidate's final loss; ``labels_rescore.png`` compares the exact rates.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from experiments import common, reconstruct, restore_labels
from jaxinvert import counts, labels, metrics, runner, viz, victim


def validate(config) -> list[dict]:
  cells = common.parse_cells(config)
  if config.setting != "fedsgd":
    common.fail("setting", f"re-scoring runs on FedSGD gradients only, got {config.setting!r}")
  for field in ("trials", "iterations"):
    if config[field] <= 0:
      common.fail(field, f"must be positive, got {config[field]}")
  if config.train_steps < 0:
    common.fail("train_steps", f"must be >= 0, got {config.train_steps}")
  for cell in cells:
    reconstruct.validate(common.apply_cell(config, cell))  # victim, data and attack fields
  return cells


def _scored(counts_: np.ndarray, true: np.ndarray) -> dict:
  predicted = metrics.counts_to_labels(counts_)
  return {"exact": metrics.labels_exact(predicted, true),
          "label_accuracy": metrics.label_accuracy(predicted, true),
          "counts": np.asarray(counts_).tolist()}


def _summary(per_trial: list[dict]) -> dict:
  return {"exact_match_rate": float(np.mean([p["exact"] for p in per_trial])),
          "label_accuracy": float(np.mean([p["label_accuracy"] for p in per_trial])),
          "per_trial": per_trial}


def run_cell(config, cache: dict, progress: bool) -> dict:
  """SELECT and the attack's choice on ``config.trials`` batches of one cell.

  The batches, updates and dummy keys are `restore_labels.run_cell`'s, so SELECT's
  answers equal that benchmark's on the same cell, seed and number of trials.
  """
  model, variables, training = restore_labels.victim_for(config, cache)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  batches = [common.client_batch(config, k) for k in jax.random.split(key, config.trials)]
  images = jnp.asarray(np.stack([b[0] for b in batches]))
  true = np.stack([b[1] for b in batches])
  k, n = config.batch_size, model.num_classes
  updates = jax.jit(jax.vmap(lambda x, y: victim.fedsgd_update(model.apply, variables, x, y)))(
      images, jnp.asarray(true))
  dummy_keys = jax.random.split(jax.random.fold_in(key, 3), config.trials)
  select = jax.jit(jax.vmap(lambda kk, u: labels.restore(
      kk, method=labels.Method.SELECT, update=u, features_fn=model.features,
      variables=variables, num_images=k, image_shape=model.image_shape,
      feature_domain=restore_labels.feature_domain(model))))(dummy_keys, updates)
  candidates = np.asarray(jax.vmap(lambda s: counts.candidates(
      s, num_images=k, num=config.hypotheses))(select.scores))
  attack_keys = jax.random.split(jax.random.fold_in(key, 4), config.trials)
  sel_trials, att_trials = [], []
  for t in tqdm.trange(config.trials, desc="batches", disable=not progress, leave=False):
    truth = np.bincount(true[t], minlength=n)
    # A vector repeated to fill the static shape is tried once.
    tried = counts.distinct(candidates[t])
    update = jax.tree.map(lambda leaf: leaf[t], updates)
    attack = reconstruct.build_attack(config, model, variables, update, None, k)
    hyps = np.stack([metrics.counts_to_labels(c) for c in tried]).astype(np.int32)
    result = runner.run(attack, key=attack_keys[t], hypotheses=jnp.asarray(hyps),
                        restarts=config.restarts, iterations=config.iterations,
                        strategy=runner.Strategy(config.strategy) if config.strategy else None,
                        log_every=config.log_every, progress=False)
    losses = np.min(np.asarray(result.losses), axis=1)     # best restart per candidate
    is_truth = np.all(tried == truth[None], axis=1)
    among = bool(is_truth.any())
    sel_trials.append(_scored(np.asarray(select.counts[t]), true[t]))
    att_trials.append({
        **_scored(tried[result.hypothesis], true[t]),
        "candidates": tried.tolist(), "losses": losses.tolist(), "truth_among": among,
        # How many wrong candidates matched better than the truth (0: the attack picks it).
        "truth_rank": int(np.sum(losses[~is_truth] < losses[is_truth][0])) if among else -1,
        "truth_loss": float(losses[is_truth][0]) if among else None,
        "best_wrong_loss": float(losses[~is_truth].min()) if (~is_truth).any() else None})
  # > 1 where the truth's copy matched better than every wrong candidate's.
  ratios = [p["best_wrong_loss"] / p["truth_loss"] for p in att_trials
            if p["truth_loss"] is not None and p["best_wrong_loss"] is not None]
  return {"victim": training,
          "true_counts": [np.bincount(y, minlength=n).tolist() for y in true],
          "methods": {"select": _summary(sel_trials), "attack": _summary(att_trials)},
          "truth_among_rate": float(np.mean([p["truth_among"] for p in att_trials])),
          "num_candidates": [len(p["candidates"]) for p in att_trials],
          "loss_ratio_best_wrong_over_truth": ratios}


def run(config, workdir: str) -> dict:
  cells = validate(config)
  os.makedirs(workdir, exist_ok=True)
  cache, results = {}, []
  with common.Timer() as timer:
    for cell in tqdm.tqdm(cells, desc="cells", disable=not config.progress):
      merged = common.apply_cell(config, cell)
      results.append({"cell": cell, **run_cell(merged, cache, config.progress)})
  names = [",".join(f"{k}={v}" for k, v in r["cell"].items()) for r in results]
  summary = {"config": config, "seconds": timer.seconds, "backend": jax.default_backend(),
             "cells": results,
             "table": {"cells": [r["cell"] for r in results],
                       "exact_match_rate": {m: [r["methods"][m]["exact_match_rate"]
                                                for r in results] for m in ("select", "attack")},
                       "label_accuracy": {m: [r["methods"][m]["label_accuracy"]
                                              for r in results] for m in ("select", "attack")},
                       "truth_among_rate": [r["truth_among_rate"] for r in results]}}
  figure = os.path.join(workdir, "labels_rescore.png")
  viz.bars(figure, {"select (last layer)": summary["table"]["exact_match_rate"]["select"],
                    "attack's lowest loss": summary["table"]["exact_match_rate"]["attack"],
                    "truth among candidates": summary["table"]["truth_among_rate"]},
           names, ylabel="exact count vectors",
           title=f"{config.model}, {config.train_steps} training steps, "
                 f"{config.iterations} attack steps")
  files = [common.write_results(workdir, summary), figure]
  common.announce(workdir, files)
  width = max(len(name) for name in names) + 2
  print("cell".ljust(width) + "select".rjust(14) + "attack".rjust(14) + "truth among".rjust(13)
        + "median ratio".rjust(14))
  for name, r in zip(names, results):
    s, a = r["methods"]["select"], r["methods"]["attack"]
    ratios = r["loss_ratio_best_wrong_over_truth"]
    print(name.ljust(width) + f"{s['exact_match_rate']:.2f}/{s['label_accuracy']:.3f}".rjust(14)
          + f"{a['exact_match_rate']:.2f}/{a['label_accuracy']:.3f}".rjust(14)
          + f"{r['truth_among_rate']:.2f}".rjust(13)
          + (f"{np.median(ratios):.2f}" if ratios else "-").rjust(14))
  print("(exact count-vector rate / label accuracy; ratio: best wrong candidate's loss over "
        "the truth's, > 1 where the attack picks the truth)", flush=True)
  return summary


if __name__ == "__main__":
  common.script_main(run, default_config="labels_rescore.py",
                     description="Label re-scoring by the attack config.",
                     xla_flags=restore_labels.XLA_FLAGS)
