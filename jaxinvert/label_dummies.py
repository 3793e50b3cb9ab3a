r"""Dummy images for the label estimators: what is pushed through the victim in place of
the batch, and the softmax and feature statistics read from it.

Geng et al. (arXiv 2110.09074, Sec. 3) estimate the batch's softmax mass S_n and feature
sums O from dummy inputs (U(0, 1) images in their code); `DummyDist` names the choices, of
which `SMOOTH` and `JITTERED` are ours (docs/labels.md, "Smooth dummies" and "Jittered
dummies"). Used by `jaxinvert.label_estimators`; re-exported by `jaxinvert.labels`.
"""

from __future__ import annotations

import enum
from typing import Callable

import jax
import jax.numpy as jnp

from jaxinvert.types import CLASSIFIER, PyTree, Variables

#: ``features_fn(variables, images) -> (features [M, d], aux)``: the victim's last
#: activation, the classifier's input (`jaxinvert.types.Model.features`).
FeaturesFn = Callable[[Variables, jax.Array], tuple[jax.Array, PyTree]]


class DummyDist(enum.Enum):
  """Inputs pushed through the victim to estimate the batch's softmax statistics."""

  UNIFORM = "uniform"    # U(0, 1) images, Geng et al.'s code
  GAUSSIAN = "gaussian"  # N(0, 1) images
  SMOOTH = "smooth"      # ours: random fields with a 1/f^3 amplitude spectrum (`smooth_images`)
  JITTERED = "jittered"  # ours: U(0, 1) noise, brightness and contrast drawn per image


def _check_request(num: int, image_shape) -> tuple[int, int, int]:
  """``image_shape`` as ``(H, W, C)``; ValueError for a non-positive ``num`` or a shape
  that is not three positive sizes."""
  shape = tuple(image_shape)
  if len(shape) != 3 or any(int(d) <= 0 for d in shape):
    raise ValueError(f"image_shape must be (H, W, C) of positive sizes, got {image_shape}")
  if num <= 0:
    raise ValueError(f"the number of dummy images must be positive, got {num}")
  return shape


SMOOTH_EXPONENT = 3.0  # chosen on held-in batches (docs/labels.md, "Smooth dummies")


def smooth_images(key: jax.Array, *, num: int, image_shape, exponent: float = SMOOTH_EXPONENT
                  ) -> jax.Array:
  """Spatially smooth random images in [0, 1]: Gaussian fields with a power-law spectrum.

  Photos are smooth: their amplitude spectrum falls with spatial frequency f (about as
  1/f, Field, JOSA A 1987), and after a few convolutions and a max-pool the features of
  smooth images sit closer to a photo batch's than those of pixel-wise U(0, 1) noise
  (docs/labels.md: the mean feature's relative error on the ConvNet 0.40 -> 0.27). Each
  image is a luminance field plus 0.3 x an independent field per channel, each with
  amplitude 1/f^exponent (zero mean), scaled to standard deviation 0.22 around 0.5 and
  clipped to [0, 1]. No data enters: only the spectrum's slope is assumed.

  Args:
    key: PRNG key.
    num: number of images.
    image_shape: ``(H, W, C)``.
    exponent: slope of the amplitude spectrum (1 = the natural-image law; the default,
      steeper, was chosen on held-in batches).

  Returns:
    ``[num, H, W, C]`` float32 images.
  """
  height, width, channels = _check_request(num, image_shape)
  fy = jnp.fft.fftfreq(height)[:, None]
  fx = jnp.fft.fftfreq(width)[None, :]
  freq = jnp.sqrt(fx ** 2 + fy ** 2)
  amplitude = jnp.where(freq > 0, jnp.maximum(freq, 1e-12) ** -exponent, 0.0)

  def fields(k: jax.Array, lead: tuple[int, ...]) -> jax.Array:
    real_key, imag_key = jax.random.split(k)
    shape = (*lead, height, width)
    noise = jax.random.normal(real_key, shape) + 1j * jax.random.normal(imag_key, shape)
    field = jnp.real(jnp.fft.ifft2(noise * amplitude))
    return field / jnp.std(field, axis=(-2, -1), keepdims=True)

  luminance_key, colour_key = jax.random.split(key)
  x = fields(luminance_key, (num,))[:, None] + 0.3 * fields(colour_key, (num, channels))
  return jnp.clip(jnp.moveaxis(0.5 + 0.22 * x, 1, -1), 0.0, 1.0).astype(jnp.float32)


#: Spread of `jittered_images`' per-image brightness (a level drawn from 0.5 +- half this)
#: and contrast (a gain drawn from U(1 - this, 1)); chosen on held-in batches
#: (docs/labels.md, "Jittered dummies").
JITTER_BRIGHTNESS = 0.6
JITTER_CONTRAST = 0.9


def jittered_images(key: jax.Array, *, num: int, image_shape,
                    brightness: float = JITTER_BRIGHTNESS, contrast: float = JITTER_CONTRAST
                    ) -> jax.Array:
  """U(0, 1) pixel noise with a random brightness and contrast per image (ours).

  Photos differ from each other most in brightness, and a victim's features show it: on
  the untrained DLG LeNet the first principal component of a photo batch's features
  holds 43-67 % of their variance and follows each image's mean pixel value (|r| >=
  0.92), against 2 % for U(0, 1) dummies, whose images all share one mean and one
  spread; the dummies' softmax mass then misses the batch's (docs/labels.md, "Jittered
  dummies"). Each image is ``clip(level + gain (u - 0.5))``
  with u ~ U(0, 1) per pixel, level ~ U(0.5 - brightness / 2, 0.5 + brightness / 2)
  and gain ~ U(1 - contrast, 1) per image. No data enters: only the two spreads.

  Args:
    key: PRNG key.
    num: number of images.
    image_shape: ``(H, W, C)``.
    brightness: width of the range of per-image levels, in [0, 1].
    contrast: the gain's spread, in [0, 1] (0: every image at full contrast).

  Returns:
    ``[num, H, W, C]`` float32 images in [0, 1].
  """
  if not (0.0 <= brightness <= 1.0 and 0.0 <= contrast <= 1.0):
    raise ValueError(f"brightness and contrast must lie in [0, 1], got {brightness}, {contrast}")
  image_shape = _check_request(num, image_shape)
  noise_key, level_key, gain_key = jax.random.split(key, 3)
  noise = jax.random.uniform(noise_key, (num, *image_shape), jnp.float32)
  level = 0.5 + brightness * (jax.random.uniform(level_key, (num, 1, 1, 1)) - 0.5)
  gain = 1.0 - contrast * jax.random.uniform(gain_key, (num, 1, 1, 1))
  return jnp.clip(level + gain * (noise - 0.5), 0.0, 1.0)


def dummy_images(key: jax.Array, *, num: int, image_shape, dist: DummyDist) -> jax.Array:
  """``num`` dummy images of the kind ``dist`` (`DummyDist`), ``[num, H, W, C]`` float32.

  Args:
    key: PRNG key.
    num: number of images.
    image_shape: ``(H, W, C)``.
    dist: the kind: U(0, 1) or N(0, 1) pixels (Geng et al.'s code uses U(0, 1)),
      `smooth_images` or `jittered_images` (ours).

  Returns:
    The images; all kinds but `GAUSSIAN` lie in [0, 1].
  """
  dist = DummyDist(dist)
  if dist == DummyDist.SMOOTH:  # these two check num and image_shape themselves
    return smooth_images(key, num=num, image_shape=image_shape)
  if dist == DummyDist.JITTERED:
    return jittered_images(key, num=num, image_shape=image_shape)
  shape = (num, *_check_request(num, image_shape))
  if dist == DummyDist.UNIFORM:
    return jax.random.uniform(key, shape, jnp.float32)
  return jax.random.normal(key, shape, jnp.float32)


def dummy_statistics(key: jax.Array, *, features_fn: FeaturesFn, variables: Variables,
                     image_shape, num_dummies: int, dummy_dist: DummyDist
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Softmax and feature statistics of dummy inputs (Geng et al.'s estimates).

  Args:
    key: PRNG key of the dummy images.
    features_fn: the victim's features (`FeaturesFn`).
    variables: the victim's variables (its last layer: ``params/classifier``).
    image_shape: ``(H, W, C)``.
    num_dummies: number of dummy images M, positive.
    dummy_dist: their kind (`DummyDist`).

  Returns:
    ``(p [M, N], O [M], features [M, d])`` for M = ``num_dummies`` dummy images.
  """
  if num_dummies <= 0:
    raise ValueError(f"num_dummies must be positive, got {num_dummies}")
  x = dummy_images(key, num=num_dummies, image_shape=image_shape, dist=dummy_dist)
  features, _ = features_fn(variables, x)
  layer = variables["params"][CLASSIFIER]
  logits = features @ layer["kernel"] + layer.get("bias", 0.0)
  return jax.nn.softmax(logits), features.sum(axis=1), features
