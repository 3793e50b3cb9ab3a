"""Image priors that steer gradient inversion toward natural images.

Each prior is a `Prior`: a name, a weight and a pure function
``(images [B,H,W,C], anchor [B,H,W,C]) -> scalar``; the attack adds
``weight * fn(images, anchor)`` to the update-matching distance.

* `total_variation`: anisotropic (Geng et al., Geiping et al.) or isotropic TV
  (Rudin, Osher & Fatemi, 1992).
* `bn_statistics`: GradInversion's (Yin et al., CVPR 2021, Eq. 6) match of the
  per-layer mean and variance of the dummy batch to BatchNorm statistics.
* `group_consistency`: GradInversion's pull of each restart toward the restarts'
  mean (Eq. 9; the anchor is that mean, refreshed by the runner at every step).
* `Box`: how images are kept in [0, 1], projection after each step or a sigmoid
  parametrisation (the latter is smooth, so L-BFGS's curvature model stays valid).
"""

from __future__ import annotations

import enum
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxinvert.models.common import BN_MOMENTUM
from jaxinvert.types import ApplyFn, PyTree, Variables

_LOGIT_CLIP = 1e-4


class Prior(NamedTuple):
  name: str
  weight: float
  fn: Callable[[jax.Array, jax.Array], jax.Array]
  needs_anchor: bool = False


def _checked_weight(weight: float, name: str) -> float:
  """``weight`` as a float; a negative or non-finite weight is refused (it would reward
  what the prior penalises)."""
  value = float(weight)
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"the {name} prior's weight must be a finite number >= 0, got {weight}")
  return value


class TV(enum.Enum):
  ANISOTROPIC = "anisotropic"
  ISOTROPIC = "isotropic"


def tv_value(images: jax.Array, *, kind: TV = TV.ANISOTROPIC) -> jax.Array:
  """Total variation per pixel, averaged over the batch.

  Anisotropic: mean |x[i+1,j] - x[i,j]| + mean |x[i,j+1] - x[i,j]|.
  Isotropic: mean sqrt(dx^2 + dy^2 + 1e-8) over the (H-1) x (W-1) interior.
  """
  dy = images[:, 1:, :, :] - images[:, :-1, :, :]
  dx = images[:, :, 1:, :] - images[:, :, :-1, :]
  if kind == TV.ANISOTROPIC:
    return jnp.mean(jnp.abs(dy)) + jnp.mean(jnp.abs(dx))
  return jnp.mean(jnp.sqrt(jnp.square(dy[:, :, :-1]) + jnp.square(dx[:, :-1]) + 1e-8))


def total_variation(weight: float, *, kind: TV = TV.ANISOTROPIC) -> Prior:
  """Total variation (Rudin et al., 1992), the image prior of Inverting Gradients
  (Geiping et al., NeurIPS 2020) and of Geng et al.'s attack.

  Args:
    weight: prior weight (>= 0; 0 leaves the prior out of the attack).
    kind: `TV` form (`tv_value`).

  Returns:
    A `Prior`.
  """
  return Prior(f"tv_{kind.value}", _checked_weight(weight, "total-variation"),
               lambda images, anchor: tv_value(images, kind=kind))


def group_consistency_value(images: jax.Array, anchor: jax.Array) -> jax.Array:
  """Mean squared distance of the images to the group anchor (restarts' mean)."""
  return jnp.mean(jnp.square(images - jax.lax.stop_gradient(anchor)))


def group_consistency(weight: float) -> Prior:
  """GradInversion's group consistency (Yin et al., CVPR 2021, Eq. 9) with ``weight``.

  Its scale against TV: both are means over the P pixels of the batch, so per pixel
  TV pulls with up to ``4 w_tv / P`` and this prior with ``2 w |x - anchor| / P``, and
  ``|x - anchor|`` is rarely above 0.3. With TV 0.8 a weight of 0.01 is some 100 times
  weaker per pixel and does nothing; weights of the order of TV's (1-3) act (README,
  ablation). GradInversion's 0.01 weighs an l2 norm, not this mean.
  """
  return Prior("group_consistency", _checked_weight(weight, "group-consistency"),
               group_consistency_value, needs_anchor=True)


def batch_statistics(apply_fn: ApplyFn, variables: Variables, images: jax.Array) -> PyTree:
  """Per-BatchNorm-layer (mean, biased variance) of a batch, in training mode.

  Read off the running statistics the forward pass writes: with momentum m,
  ``new = m * old + (1 - m) * batch``, so ``batch = (new - m * old) / (1 - m)``.

  Returns:
    A tree like ``variables['batch_stats']`` with the batch's own statistics.
  """
  if "batch_stats" not in variables:
    raise ValueError("batch statistics need a model with BatchNorm layers (no 'batch_stats')")
  _, state = apply_fn(variables, images)
  return jax.tree.map(lambda new, old: (new - BN_MOMENTUM * old) / (1.0 - BN_MOMENTUM),
                      state["batch_stats"], variables["batch_stats"])


def bn_statistics(weight: float, *, apply_fn: ApplyFn, variables: Variables,
                  target_stats: PyTree | None = None) -> Prior:
  """GradInversion's BatchNorm prior: sum over layers of ||mu - mu*||_2 + ||var - var*||_2.

  Args:
    weight: prior weight.
    apply_fn: the victim's apply function (training mode).
    variables: the victim's variables; their ``batch_stats`` are the target unless
      ``target_stats`` is given (e.g. the real batch's statistics when the client
      shares its BatchNorm buffers, as FedAvg clients do).
    target_stats: tree like ``variables['batch_stats']``.

  Raises:
    ValueError: the model has no BatchNorm.
  """
  weight = _checked_weight(weight, "bn_statistics")
  if "batch_stats" not in variables:
    raise ValueError("the bn_statistics prior needs a victim with BatchNorm layers; "
                     "this model has none (set its weight to 0)")
  target = variables["batch_stats"] if target_stats is None else target_stats

  def fn(images, anchor):
    del anchor
    stats = batch_statistics(apply_fn, variables, images)
    terms = jax.tree.map(lambda s, t: jnp.sqrt(jnp.sum(jnp.square(s - t)) + 1e-12), stats,
                         target)
    return jnp.sum(jnp.stack(jax.tree.leaves(terms)))

  return Prior("bn_statistics", weight, fn)


class Box(enum.Enum):
  """Keeping images in [0, 1]."""

  NONE = "none"          # unconstrained (DLG)
  CLIP = "clip"          # projection after every step (Geiping et al.)
  SIGMOID = "sigmoid"    # images = sigmoid(latent)

  def to_images(self, latent: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(latent) if self == Box.SIGMOID else latent

  def from_images(self, images: jax.Array) -> jax.Array:
    if self == Box.SIGMOID:
      clipped = jnp.clip(images, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
      return jnp.log(clipped) - jnp.log1p(-clipped)
    return images

  def project(self, latent: jax.Array) -> jax.Array:
    return jnp.clip(latent, 0.0, 1.0) if self == Box.CLIP else latent
