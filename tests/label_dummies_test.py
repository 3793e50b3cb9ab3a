"""The dummy images of `jaxinvert.label_dummies` (re-exported by `jaxinvert.labels`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import label_dummies, labels


def _neighbour_correlation(x):
  a, b = np.asarray(x[:, :, :-1]).ravel(), np.asarray(x[:, :, 1:]).ravel()
  return float(np.corrcoef(a, b)[0, 1])


def _unit_box_images(make, key: jax.Array, num: int, image_shape) -> jax.Array:
  """``make(key, num=, image_shape=)``, checked: shape, float32, in [0, 1], deterministic."""
  x = make(key, num=num, image_shape=image_shape)
  assert x.shape == (num, *image_shape) and x.dtype == jnp.float32
  assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
  np.testing.assert_array_equal(x, make(key, num=num, image_shape=image_shape))
  return x


def test_smooth_dummies_are_spatially_correlated_images_in_the_unit_box():
  key = jax.random.key(4)
  x = _unit_box_images(labels.smooth_images, key, 16, (32, 24, 3))
  assert abs(float(x.mean()) - 0.5) < 0.05
  assert _neighbour_correlation(x) > 0.9
  flatter = labels.smooth_images(key, num=16, image_shape=(32, 24, 3), exponent=0.0)
  assert abs(_neighbour_correlation(flatter)) < 0.2   # exponent 0: white noise
  # Channels share the luminance field: strongly but not perfectly correlated.
  rg = np.corrcoef(np.asarray(x[..., 0]).ravel(), np.asarray(x[..., 1]).ravel())[0, 1]
  assert 0.8 < rg < 0.99


def test_jittered_dummies_vary_in_brightness_and_contrast_per_image():
  key = jax.random.key(5)
  x = _unit_box_images(labels.jittered_images, key, 256, (16, 12, 3))
  means = np.asarray(x.mean(axis=(1, 2, 3)))
  spreads = np.asarray(x.std(axis=(1, 2, 3)))
  # Levels from U(0.2, 0.8), gains from U(0.1, 1). U(0, 1) noise alone gives every image
  # a spread of about 0.29 and, over 576 pixels, a mean within about 0.04 of 0.5.
  assert means.min() < 0.3 and means.max() > 0.7
  assert spreads.min() < 0.08 and spreads.max() > 0.25
  plain = labels.jittered_images(key, num=256, image_shape=(16, 12, 3), brightness=0.0,
                                 contrast=0.0)
  assert np.abs(np.asarray(plain.mean(axis=(1, 2, 3))) - 0.5).max() < 0.05
  assert np.asarray(plain.std(axis=(1, 2, 3))).min() > 0.25
  with pytest.raises(ValueError, match="brightness and contrast"):
    labels.jittered_images(key, num=2, image_shape=(4, 4, 3), contrast=1.5)


def test_dummy_images_dispatches_on_the_kind_and_rejects_unknown_names():
  key = jax.random.key(6)
  shape = (8, 6, 3)
  for dist, make in ((label_dummies.DummyDist.SMOOTH, labels.smooth_images),
                     ("jittered", labels.jittered_images)):
    np.testing.assert_array_equal(
        labels.dummy_images(key, num=4, image_shape=shape, dist=dist),
        make(key, num=4, image_shape=shape))
  uniform = labels.dummy_images(key, num=64, image_shape=shape, dist="uniform")
  assert 0.0 <= float(uniform.min()) and float(uniform.max()) <= 1.0
  assert abs(float(uniform.mean()) - 0.5) < 0.02
  gaussian = labels.dummy_images(key, num=64, image_shape=shape, dist="gaussian")
  assert float(gaussian.min()) < 0.0 and abs(float(gaussian.std()) - 1.0) < 0.05
  with pytest.raises(ValueError, match="'checkerboard' is not a valid DummyDist"):
    labels.dummy_images(key, num=1, image_shape=shape, dist="checkerboard")
  for make in (labels.smooth_images, labels.jittered_images,
               lambda k, **kw: labels.dummy_images(k, dist="uniform", **kw)):
    with pytest.raises(ValueError, match="number of dummy images must be positive"):
      make(key, num=0, image_shape=shape)
    with pytest.raises(ValueError, match=r"image_shape must be \(H, W, C\)"):
      make(key, num=2, image_shape=(8, 6))
  with pytest.raises(ValueError, match="num_dummies must be positive"):
    labels.dummy_statistics(key, features_fn=None, variables={}, image_shape=shape,
                            num_dummies=0, dummy_dist="uniform")
