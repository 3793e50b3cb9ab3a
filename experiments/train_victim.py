r"""Train a victim model with optax SGD and save orbax checkpoints at chosen steps.

  python -m experiments.train_victim --config=experiments/configs/train_victim.py \
      --workdir=workdirs/victim

Label restoration and reconstruction then load a checkpoint with
``--config.victim_checkpoint=workdirs/victim/checkpoints --config.victim_step=100``.
On `photos` the training set is a fixed pool of ``train_pool`` crops per class (sample
indices 0..train_pool-1); held-out accuracy uses other indices, and client batches of
the attack scripts draw indices from the whole 31-bit range (almost never the pool).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from experiments import common
from jaxinvert import checkpoint, data, victim, viz


_EVAL_OFFSET = 1_000_000_000  # photos sample indices of the held-out set


def save_steps(config) -> list[int]:
  try:
    steps = sorted({int(s) for s in str(config.get("save_steps", "")).split(",") if s.strip()})
  except ValueError:
    common.fail("save_steps", f"must be comma-separated integers, got {config.save_steps!r}")
  if any(s < 0 or s > config.train_steps for s in steps):
    common.fail("save_steps", f"{steps} must lie in [0, train_steps={config.train_steps}]")
  return steps


def training_pool(config, num: int, offset: int, key: jax.Array):
  """``num`` images per class: photos by fixed indices, TFDS by random draws."""
  classes = common.num_classes(config)
  if config.dataset == "photos":
    photos = data.Photos(image_size=config.image_size, num_classes=classes)
    labels = np.repeat(np.arange(classes), num)
    indices = np.tile(np.arange(num), classes) + offset
    return photos.load(labels, indices), labels.astype(np.int32)
  source = data.get_source(config.dataset, image_size=config.image_size,
                           data_dir=config.data_dir or None)
  labels = np.repeat(np.arange(classes), num).astype(np.int32)
  return source.images_of_classes(data.numpy_rng(key), labels), labels


def train(config, *, workdir: str | None = None, save_at: list[int] | None = None,
          progress: bool = True):
  """Trains from ``config``; returns ``(model, {step: variables}, history)``.

  Args:
    config: victim, data and training fields (see configs/train_victim.py).
    workdir: checkpoints go to ``workdir/checkpoints`` when given.
    save_at: steps to keep; default ``config.save_steps``.
    progress: show a progress bar.
  """
  common.validate_victim_and_data(config)
  for field in ("train_steps", "train_pool", "eval_pool"):
    if config[field] < 0 or (field == "train_pool" and config[field] == 0):
      common.fail(field, f"must be {'positive' if field == 'train_pool' else '>= 0'}, "
                  f"got {config[field]}")
  if config.train_lr <= 0:
    common.fail("train_lr", f"must be positive, got {config.train_lr}")
  steps_to_save = sorted(save_at) if save_at is not None else save_steps(config)
  key = jax.random.key(config.seed)
  model_key, pool_key, eval_key, order_key = jax.random.split(key, 4)
  model, variables = common.build_victim(config, model_key)
  train_x, train_y = training_pool(config, config.train_pool, 0, pool_key)
  eval_x, eval_y = (training_pool(config, config.eval_pool, _EVAL_OFFSET, eval_key)
                    if config.eval_pool else (train_x[:0], train_y[:0]))
  optimizer = optax.sgd(config.train_lr, momentum=config.momentum or None)
  opt_state = optimizer.init(variables["params"])

  @jax.jit
  def step(variables, opt_state, x, y):
    grad_fn = jax.value_and_grad(
        lambda p: victim.batch_loss(model.apply, variables, p, x, y), has_aux=True)
    (loss, state), grads = grad_fn(variables["params"])
    updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], updates)
    return {**variables, **state, "params": params}, opt_state, loss

  @jax.jit
  def accuracy(variables, x, y):
    logits, _ = model.apply(variables, x, train=False)
    return jnp.mean(jnp.argmax(logits, -1) == y), victim.mean_cross_entropy(logits, y)

  def evaluate(variables):
    out = {}
    for name, (x, y) in (("train", (train_x, train_y)), ("eval", (eval_x, eval_y))):
      if len(x):
        acc, loss = accuracy(variables, x, y)
        out[f"{name}_accuracy"], out[f"{name}_loss"] = float(acc), float(loss)
    return out

  history, saved, losses = [], {}, []
  ckpt_dir = os.path.join(workdir, "checkpoints") if workdir else None
  rng = data.numpy_rng(order_key)
  batch = min(config.train_batch_size, len(train_x))

  def save(step_index):
    record = {"step": step_index, **evaluate(variables)}
    history.append(record)
    saved[step_index] = variables
    if ckpt_dir:
      checkpoint.save_victim(ckpt_dir, step_index, variables,
                             metadata={"config": common.to_jsonable(config), **record})

  if 0 in steps_to_save:
    save(0)
  for i in tqdm.trange(1, config.train_steps + 1, desc=f"train {config.model}",
                       disable=not progress, leave=False):
    idx = rng.choice(len(train_x), size=batch, replace=False)
    variables, opt_state, loss = step(variables, opt_state, train_x[idx], train_y[idx])
    losses.append(loss)
    if i in steps_to_save:
      save(i)
  curve = np.asarray(jnp.stack(losses)) if losses else np.zeros(0)
  return model, saved, {"saved": history, "train_loss": curve}


def run(config, workdir: str) -> None:
  """Trains, saves the checkpoints, and writes results.json and the training curve."""
  with common.Timer() as timer:
    _, _, history = train(config, workdir=workdir, progress=config.progress)
  for record in history["saved"]:
    print("jaxinvert: step {step}: ".format(**record) + ", ".join(
        f"{k} {v:.4f}" for k, v in record.items() if k != "step"), flush=True)
  files = [common.write_results(workdir, {"config": config, "seconds": timer.seconds,
                                          "checkpoints": history["saved"],
                                          "train_loss": history["train_loss"]})]
  files.append(os.path.join(workdir, "training_curve.png"))
  loss = history["train_loss"]
  viz.curves(files[-1], {"train loss": (np.arange(1, len(loss) + 1), loss)},
             xlabel="step", ylabel="mini-batch cross-entropy", logy=True,
             title=f"{config.model} on {config.dataset}")
  common.announce(workdir, files)



if __name__ == "__main__":
  common.script_main(run, default_config="train_victim.py", description="Training config.")
