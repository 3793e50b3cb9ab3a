import collections
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxinvert import data


def _counts(labels):
  return sorted(collections.Counter(np.asarray(labels).tolist()).values(), reverse=True)


@pytest.mark.parametrize("spec,b,expected", [
    ("unique", 8, [1] * 8),
    ("repeat", 6, [6]),
    ("single:3", 8, [3, 1, 1, 1, 1, 1]),
    ("single:8", 8, [8]),
    ("factor:2", 8, [2, 2, 2, 2]),
    ("factor:4", 12, [4, 4, 4]),
])
def test_label_distributions_yield_the_stated_multiset(spec, b, expected):
  for seed in range(5):
    labels = data.sample_labels(jax.random.key(seed), batch_size=b, num_classes=10, dist=spec)
    assert labels.shape == (b,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < 10
    assert _counts(labels) == expected


def test_random_distribution_in_range_and_seeded():
  a = data.sample_labels(jax.random.key(0), batch_size=64, num_classes=5, dist="random")
  b = data.sample_labels(jax.random.key(0), batch_size=64, num_classes=5, dist="random")
  np.testing.assert_array_equal(a, b)
  assert set(a.tolist()) == set(range(5))  # 64 draws over 5 classes hit all


@pytest.mark.parametrize("spec,b,n,match", [
    ("single:9", 8, 10, "exceeds batch_size"),
    ("factor:3", 8, 10, "not divisible"),
    ("unique", 11, 10, "needs 11 distinct classes"),
    ("factor:1", 12, 10, "needs 12 distinct"),
    ("single:2", 12, 10, "needs 11 distinct"),
    ("single", 8, 10, "needs an integer r"),
    ("single:0", 8, 10, "r must be >= 1"),
    ("zipf", 8, 10, "unknown label distribution"),
    ("unique:2", 8, 10, "takes no argument"),
])
def test_bad_label_dist(spec, b, n, match):
  with pytest.raises(ValueError, match=match):
    data.sample_labels(jax.random.key(0), batch_size=b, num_classes=n, dist=spec)


def test_photos_deterministic_real_and_in_range():
  photos = data.Photos(image_size=32)
  assert photos.num_classes >= 10
  a = photos.load([0, 3, 7], [5, 5, 11])
  b = photos.load([0, 3, 7], [5, 5, 11])
  np.testing.assert_array_equal(a, b)
  assert a.shape == (3, 32, 32, 3) and a.dtype == np.float32
  assert a.min() >= 0 and a.max() <= 1
  assert not np.allclose(a[1], photos.load([3], [6])[0])  # another index, another crop
  assert a.std() > 0.05  # a real photograph, not a constant
  big = data.Photos(image_size=224).load([1], [0])
  assert big.shape == (1, 224, 224, 3)


@pytest.mark.parametrize("cls,index,total,pixel", [
    (1, 0, 1356.658, 0.453312), (7, 3, 1628.128, 0.924082), (12, 99, 1232.618, 0.362181)])
def test_photos_pinned_values(cls, index, total, pixel):
  """Same index -> same image on every machine: pinned sums and one pixel (skimage 0.26)."""
  image = data.photo_sample(cls, index, 32)
  np.testing.assert_allclose(image.sum(), total, rtol=1e-5)
  np.testing.assert_allclose(image[5, 7, 1], pixel, atol=1e-5)


def test_sample_batch_matches_labels():
  images, labels = data.sample_batch(jax.random.key(3), source=data.Photos(), batch_size=6,
                                     label_dist="factor:3")
  assert images.shape == (6, 32, 32, 3)
  assert _counts(labels) == [3, 3]
  images2, labels2 = data.sample_batch(jax.random.key(3), source=data.Photos(), batch_size=6,
                                       label_dist="factor:3")
  np.testing.assert_array_equal(images, images2)
  np.testing.assert_array_equal(labels, labels2)


def test_tfds_missing_data_fails_fast_with_named_error(tmp_path):
  start = time.time()
  source = data.get_source("cifar10", image_size=32, data_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotPreparedError) as err:
    data.sample_batch(jax.random.key(0), source=source, batch_size=2, label_dist="unique")
  message = str(err.value)
  assert "cifar10" in message and str(tmp_path) in message and "tfds build" in message
  assert time.time() - start < 10
  with pytest.raises(data.DatasetNotPreparedError, match="needs data_dir"):
    data.get_source("imagenet2012", image_size=224)
  with pytest.raises(ValueError, match="unknown dataset"):
    data.get_source("mnist", image_size=28)


def test_tfds_loads_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    source = data.get_source("cifar10", image_size=32, data_dir=str(tmp_path))
    images, labels = data.sample_batch(jax.random.key(0), source=source, batch_size=4,
                                       label_dist="random")
  assert images.shape == (4, 32, 32, 3) and images.dtype == np.float32
  assert 0 <= images.min() and images.max() <= 1
  assert labels.shape == (4,)


def test_tfds_resizes_to_requested_size(tmp_path):
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    source = data.get_source("cifar10", image_size=16, data_dir=str(tmp_path))
    images, _ = data.sample_batch(jax.random.key(1), source=source, batch_size=2,
                                  label_dist="random")
  assert images.shape == (2, 16, 16, 3)


def test_mislabel_changes_exactly_that_many_labels_to_other_classes():
  labels = np.array([0, 0, 1, 2, 2, 2], np.int32)
  for num_wrong in range(7):
    for seed in range(5):
      out = data.mislabel(jax.random.key(seed), labels, num_wrong=num_wrong, num_classes=3)
      assert out.dtype == np.int32 and np.sum(out != labels) == num_wrong
      assert out.min() >= 0 and out.max() < 3
  again = data.mislabel(jax.random.key(4), labels, num_wrong=2, num_classes=3)
  np.testing.assert_array_equal(again, data.mislabel(jax.random.key(4), labels, num_wrong=2,
                                                     num_classes=3))
  with pytest.raises(ValueError, match="num_wrong must be between 0 and the batch size 6"):
    data.mislabel(jax.random.key(0), labels, num_wrong=7, num_classes=3)
  with pytest.raises(ValueError, match="at least 2 classes"):
    data.mislabel(jax.random.key(0), labels[:1] * 0, num_wrong=1, num_classes=1)
