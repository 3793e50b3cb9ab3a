"""Shared type aliases and the `Model` bundle every victim network is wrapped in.

A model here is a pair of pure functions over a flax `variables` dict:

* ``apply(variables, images) -> (logits, new_state)``, and
* ``features(variables, images) -> (features, new_state)``, the input of the last
  (classifier) layer, which label restoration needs.

``new_state`` holds the updated non-parameter collections (``{'batch_stats': ...}``
for BatchNorm models, ``{}`` otherwise). BatchNorm runs in *training mode* by
default: the batch's own statistics normalise it, as on a client computing its update.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol

import flax.linen as nn
import jax

PyTree = Any
Params = PyTree
Variables = Mapping[str, PyTree]

#: Name of the last dense layer in every model of `jaxinvert.models`. Label
#: restoration reads ``params[CLASSIFIER]['kernel']`` (features x classes) and
#: ``params[CLASSIFIER]['bias']``.
CLASSIFIER = "classifier"


class ApplyFn(Protocol):
  """``apply_fn(variables, images) -> (logits, new_state)``, pure."""

  def __call__(self, variables: Variables, images: jax.Array) -> tuple[jax.Array, PyTree]:
    ...


@dataclasses.dataclass(frozen=True)
class Model:
  """A flax module with the shape facts the rest of the library needs.

  Frozen and hashable, so ``model.apply`` can be a static argument of `jax.jit`.

  Attributes:
    name: registry name, e.g. ``'lenet'``.
    module: the flax linen module; its ``__call__(x, train, return_features)``.
    image_shape: ``(height, width, channels)`` of one NHWC input image.
    num_classes: number of logits.
    has_batchnorm: whether the module holds BatchNorm layers (``batch_stats``).
  """

  name: str
  module: nn.Module
  image_shape: tuple[int, int, int]
  num_classes: int
  has_batchnorm: bool

  def init(self, key: jax.Array) -> dict[str, PyTree]:
    """Draws fresh variables (``params`` and, with BatchNorm, ``batch_stats``)."""
    dummy = jax.numpy.zeros((1, *self.image_shape), jax.numpy.float32)
    return dict(self.module.init(key, dummy, train=False))

  def apply(
      self, variables: Variables, images: jax.Array, *, train: bool = True
  ) -> tuple[jax.Array, dict[str, PyTree]]:
    """Logits and the updated BatchNorm state (``{}`` without BatchNorm)."""
    return self._run(variables, images, train=train, return_features=False)

  def features(
      self, variables: Variables, images: jax.Array, *, train: bool = True
  ) -> tuple[jax.Array, dict[str, PyTree]]:
    """Input of the classifier layer, shape ``[batch, feature_dim]``."""
    return self._run(variables, images, train=train, return_features=True)

  def _run(self, variables, images, *, train, return_features):
    if self.has_batchnorm and train:
      out, state = self.module.apply(
          variables, images, train=True, return_features=return_features,
          mutable=["batch_stats"])
      return out, dict(state)
    out = self.module.apply(variables, images, train=False, return_features=return_features)
    return out, {}


ImageTransform = Callable[[jax.Array], jax.Array]
