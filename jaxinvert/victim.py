"""The simulated federated client: what it computes and shares.

* FedSGD (McMahan et al., 2017): the client shares the gradient of the mean
  cross-entropy over its private batch, `fedsgd_update`.
* FedAvg: the client runs ``local_epochs`` epochs of mini-batch SGD over its batch and
  shares the resulting weights, `fedavg_update`, unrolled with `jax.lax.scan` so the
  whole local training is differentiable with respect to the images (the unrolled
  attack of Dimitrov et al., "Data Leakage in Federated Averaging", TMLR 2022).

Both are pure functions of ``(apply_fn, variables, images, labels)`` and are
jit/vmap/grad-friendly. ``apply_fn(variables, images) -> (logits, new_state)``: with
BatchNorm it runs in training mode, so a step normalises with the mini-batch's
statistics and the running statistics are carried from step to step as in training.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinvert.types import ApplyFn, Params, PyTree, Variables


def mean_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the batch, integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _concrete(x: Any) -> np.ndarray | None:
  """``x`` as a NumPy array when its values are known (not traced), else None."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_batch(images: jax.Array, labels: jax.Array) -> None:
  """Raises ValueError for a batch no client could hold.

  Checks shapes always and label values when they are concrete (not traced).
  """
  if images.ndim != 4:
    raise ValueError(f"images must be NHWC with 4 dimensions, got shape {images.shape}")
  if images.shape[0] == 0:
    raise ValueError("empty batch: images has batch size 0")
  if labels.shape != (images.shape[0],):
    raise ValueError(
        f"labels must have shape ({images.shape[0]},) to match the images, got {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}")


def check_label_range(labels: jax.Array, num_classes: int | None, *,
                      what: str = "labels") -> None:
  """Raises ValueError for labels below 0 or at or above ``num_classes`` (None: not
  known, only negatives are refused). Traced labels are not checked: under `jit` an
  out-of-range label would become an all-zero one-hot row, silently."""
  values = _concrete(labels)
  if values is None or not values.size:
    return
  low, high = int(values.min()), int(values.max())
  if low < 0 or (num_classes is not None and high >= num_classes):
    allowed = f"[0, {num_classes})" if num_classes is not None else "[0, number of classes)"
    raise ValueError(f"{what} out of range: they span [{low}, {high}], the victim's labels "
                     f"lie in {allowed}")


def _forward(apply_fn: ApplyFn, variables: Variables, images: jax.Array):
  """``apply_fn`` with shape errors turned into a ValueError that names the images."""
  try:
    return apply_fn(variables, images)
  except (flax.errors.FlaxError, TypeError, ValueError) as e:
    raise ValueError(
        f"images of shape {tuple(images.shape)} do not fit the model: {e}") from e


def batch_loss(
    apply_fn: ApplyFn, variables: Variables, params: Params, images: jax.Array,
    labels: jax.Array,
) -> tuple[jax.Array, PyTree]:
  """Mean cross-entropy of ``params`` on a batch, and the model's new state."""
  logits, state = _forward(apply_fn, {**variables, "params": params}, images)
  check_label_range(labels, logits.shape[-1])
  return mean_cross_entropy(logits, labels), state


def fedsgd_update(
    apply_fn: ApplyFn, variables: Variables, images: jax.Array, labels: jax.Array
) -> Params:
  """The gradient a FedSGD client shares.

  Args:
    apply_fn: ``(variables, images) -> (logits, new_state)``.
    variables: the global model, ``{'params': ..., ['batch_stats': ...]}``.
    images: the private batch, ``[B, H, W, C]``.
    labels: integer classes, ``[B]``.

  Returns:
    d/dparams of the mean cross-entropy over the batch, same tree as
    ``variables['params']``.

  Raises:
    ValueError: empty batch, labels out of range or of the wrong shape, images that
      do not fit the model.
  """
  check_batch(images, labels)
  grad_fn = jax.grad(lambda p: batch_loss(apply_fn, variables, p, images, labels)[0])
  return grad_fn(variables["params"])


def local_steps(num_examples: int, *, local_epochs: int, local_batch_size: int) -> int:
  """Number of SGD steps of FedAvg's local training, after validating the settings."""
  if local_epochs <= 0:
    raise ValueError(f"local_epochs must be positive, got {local_epochs}")
  if local_batch_size <= 0:
    raise ValueError(f"local_batch_size must be positive, got {local_batch_size}")
  if num_examples % local_batch_size:
    raise ValueError(
        f"batch size {num_examples} is not a multiple of local_batch_size {local_batch_size}")
  return local_epochs * (num_examples // local_batch_size)


def epoch_orders(
    key: jax.Array | None, num_examples: int, *, local_epochs: int
) -> jax.Array:
  """Example order of each local epoch, ``[local_epochs, num_examples]`` int32.

  ``key=None`` keeps the batch in order; a key draws an independent permutation per
  epoch (one `jax.random.split` per epoch).
  """
  if key is None:
    return jnp.tile(jnp.arange(num_examples, dtype=jnp.int32), (local_epochs, 1))
  keys = jax.random.split(key, local_epochs)
  return jax.vmap(lambda k: jax.random.permutation(k, num_examples))(keys).astype(jnp.int32)


def fedavg_update(
    apply_fn: ApplyFn,
    variables: Variables,
    images: jax.Array,
    labels: jax.Array,
    *,
    local_epochs: int,
    local_batch_size: int,
    local_lr: float | jax.Array,
    key: jax.Array | None = None,
    order: jax.Array | None = None,
    remat: bool = False,
    unroll: int | bool = 1,
) -> dict[str, PyTree]:
  """The weights a FedAvg client shares after local training.

  Local training is ``local_epochs`` passes of plain SGD over mini-batches of
  ``local_batch_size`` examples, unrolled with `jax.lax.scan`, so the result is
  differentiable with respect to ``images`` (Dimitrov et al., TMLR 2022).

  Args:
    apply_fn: ``(variables, images) -> (logits, new_state)``.
    variables: the global model at the start of the round.
    images: the private batch, ``[B, H, W, C]``.
    labels: integer classes, ``[B]``.
    local_epochs: passes over the batch.
    local_batch_size: examples per SGD step; must divide B.
    local_lr: SGD learning rate.
    key: shuffles the examples at every epoch; ``None`` = in order.
    order: explicit example order, ``[local_epochs, B]`` (exclusive with ``key``).
    remat: recompute each local step's activations in the backward pass
      (`jax.checkpoint`), trading compute for memory on long unrolls.
    unroll: local steps per iteration of the `lax.scan` loop (``True`` = all, no loop
      left). Same values; a matter of speed and compile time. On XLA:CPU (jax 0.10.2)
      convolutions inside the loop ran far below their speed outside it: ConvNet width
      64, B=4, 4 local steps, gradient of a matching loss with respect to the images:
      20.1 s per step with the loop against 0.96 s fully unrolled (matmul weight
      gradients; 2.6 s with XLA's own convolutions). Pass ``True`` on CPU for short
      unrolls; keep 1 on accelerators and for long unrolls (compile time grows with it).

  Returns:
    The client's variables after training: ``params`` and, with BatchNorm, the
    ``batch_stats`` carried through every step as training does.

  Raises:
    ValueError: bad batch (see `fedsgd_update`), local settings that do not fit the
      batch, a learning rate that is not positive, or both ``key`` and ``order``.
  """
  check_batch(images, labels)
  lr = _concrete(local_lr)
  if lr is not None and not np.all(lr > 0):
    raise ValueError(f"local_lr must be positive, got {local_lr}")
  # NumPy inputs (data.sample_batch's) cannot be indexed by the scan's traced indices.
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  num = images.shape[0]
  # Labels are indexed inside the scan (traced there): check them against the model here.
  logits = jax.eval_shape(lambda v, x: _forward(apply_fn, v, x)[0], variables,
                          images[:max(1, min(local_batch_size, num))])
  check_label_range(labels, logits.shape[-1])
  steps_per_epoch = local_steps(num, local_epochs=local_epochs,
                                local_batch_size=local_batch_size) // local_epochs
  if key is not None and order is not None:
    raise ValueError("give the local example order by key or by order, not both")
  if order is None:
    order = epoch_orders(key, num, local_epochs=local_epochs)
  elif order.shape != (local_epochs, num):
    raise ValueError(f"order must have shape ({local_epochs}, {num}), got {order.shape}")
  batches = order.reshape(local_epochs * steps_per_epoch, local_batch_size)

  def sgd_step(current: dict[str, PyTree], index: jax.Array):
    grad_fn = jax.value_and_grad(
        lambda p: batch_loss(apply_fn, current, p, images[index], labels[index]), has_aux=True)
    (loss, state), grads = grad_fn(current["params"])
    params = jax.tree.map(lambda p, g: p - local_lr * g, current["params"], grads)
    return {**current, **state, "params": params}, loss

  if remat:
    sgd_step = jax.checkpoint(sgd_step)
  final, _ = jax.lax.scan(sgd_step, dict(variables), batches, unroll=unroll)
  return final


def weight_delta(before: Variables, after: Variables) -> Params:
  """``after['params'] - before['params']``: the FedAvg update as a parameter tree."""
  return jax.tree.map(jnp.subtract, after["params"], before["params"])
