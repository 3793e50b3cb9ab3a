"""Images and label distributions for simulated clients.

* `Photos`: the offline default. Each class is one real photograph shipped with
  scikit-image or scikit-learn; a sample is a deterministic random crop, rescale and
  flip of its class photograph, so the same (class, index) gives the same image on
  every machine and nothing is downloaded.
* `TfdsSource`: CIFAR-10, CIFAR-100 and ImageNet-2012 through `tfds.data_source`
  (array_record files read without TensorFlow) from a prepared ``data_dir``. It never
  downloads: absent data raises `DatasetNotPreparedError` naming the command to run.
* Label distributions of a batch (`LabelDist`, `parse_label_dist`, `sample_labels`):
  the duplicate-label settings of Geng et al. (arXiv 2110.09074, Sec. 5).

Data are host-side NumPy (float32 NHWC in [0, 1]); they enter JAX at the victim.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
from typing import Protocol, Sequence

import jax
import numpy as np
import skimage.data
import skimage.transform

# --------------------------------------------------------------------------- photos

#: (class name, loader). Colour photographs first, then greyscale ones shown as RGB.
_PHOTO_LOADERS = (
    ("astronaut", lambda: skimage.data.astronaut()),
    ("chelsea", lambda: skimage.data.chelsea()),
    ("coffee", lambda: skimage.data.coffee()),
    ("rocket", lambda: skimage.data.rocket()),
    ("hubble_deep_field", lambda: skimage.data.hubble_deep_field()),
    ("immunohistochemistry", lambda: skimage.data.immunohistochemistry()),
    ("retina", lambda: skimage.data.retina()),
    ("china", lambda: _sklearn_sample_image("china.jpg")),
    ("flower", lambda: _sklearn_sample_image("flower.jpg")),
    ("colorwheel", lambda: skimage.data.colorwheel()),
    ("camera", lambda: skimage.data.camera()),
    ("brick", lambda: skimage.data.brick()),
    ("coins", lambda: skimage.data.coins()),
    ("clock", lambda: skimage.data.clock()),
    ("moon", lambda: skimage.data.moon()),
    ("grass", lambda: skimage.data.grass()),
    ("gravel", lambda: skimage.data.gravel()),
    ("page", lambda: skimage.data.page()),
    ("text", lambda: skimage.data.text()),
    ("cell", lambda: skimage.data.cell()),
)
PHOTO_CLASSES = tuple(name for name, _ in _PHOTO_LOADERS)

# Fixed root of every photo sample's random stream; changing it changes the dataset.
_PHOTOS_SEED = 20211018
_MIN_CROP_FRACTION = 0.35


def _sklearn_sample_image(filename: str) -> np.ndarray:
  from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
  return load_sample_image(filename)


@functools.lru_cache(maxsize=None)
def _photo(class_index: int, shorter_side: int | None = None) -> np.ndarray:
  """The class photograph as float32 RGB in [0, 1], read-only (memoised file read).

  With ``shorter_side``, first rescaled (anti-aliased) so its shorter side is at most
  that many pixels: small samples are then cropped from a small photo, 10x faster.
  """
  if shorter_side is not None:
    image = _photo(class_index)
    scale = shorter_side / min(image.shape[:2])
    if scale < 1:
      size = (round(image.shape[0] * scale), round(image.shape[1] * scale))
      image = skimage.transform.resize(image, size, order=1, anti_aliasing=True)
      image = np.clip(image, 0, 1).astype(np.float32)
      image.setflags(write=False)
    return image
  image = np.asarray(_PHOTO_LOADERS[class_index][1]())
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  image = image[..., :3].astype(np.float32) / 255.0
  image.setflags(write=False)
  return image


def photo_sample(class_index: int, index: int, image_size: int) -> np.ndarray:
  """One deterministic sample of class ``class_index``: crop, rescale, flip.

  The class photograph, first reduced so its shorter side is at most
  max(128, 4 x image_size) pixels, gives a square crop of side U(0.35, 1) x its
  shorter side at a uniform position, resized with anti-aliasing to ``image_size``
  and flipped left-right with probability 1/2, all drawn from a NumPy stream seeded
  by (class, index).

  Returns:
    ``[image_size, image_size, 3]`` float32 in [0, 1].
  """
  photo = _photo(class_index, max(128, 4 * image_size))
  rng = np.random.default_rng([_PHOTOS_SEED, class_index, index])
  height, width = photo.shape[:2]
  side = int(round(min(height, width) * rng.uniform(_MIN_CROP_FRACTION, 1.0)))
  top = int(rng.integers(0, height - side + 1))
  left = int(rng.integers(0, width - side + 1))
  crop = photo[top:top + side, left:left + side]
  if rng.uniform() < 0.5:
    crop = crop[:, ::-1]
  out = skimage.transform.resize(crop, (image_size, image_size), order=1, anti_aliasing=True)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


class ImageSource(Protocol):
  """Where a simulated client's images come from."""

  name: str
  num_classes: int
  image_size: int

  def images_of_classes(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """One image per label, ``[len(labels), H, W, 3]`` float32 in [0, 1]."""


@dataclasses.dataclass(frozen=True)
class Photos:
  """The offline default: `PHOTO_CLASSES`, one real photograph per class.

  Attributes:
    image_size: 32 (CIFAR shape) or 224 (ImageNet shape), or any positive size.
    num_classes: how many of the photographs to use as classes (<= 20).
  """

  image_size: int = 32
  num_classes: int = len(PHOTO_CLASSES)
  name: str = "photos"

  def __post_init__(self):
    if self.image_size <= 0:
      raise ValueError(f"image_size must be positive, got {self.image_size}")
    if not 1 <= self.num_classes <= len(PHOTO_CLASSES):
      raise ValueError(
          f"num_classes: photos has {len(PHOTO_CLASSES)} classes, asked for {self.num_classes}")

  def load(self, labels: Sequence[int], indices: Sequence[int]) -> np.ndarray:
    """Images of the given (class, sample index) pairs, ``[N, S, S, 3]``."""
    labels, indices = np.asarray(labels), np.asarray(indices)
    if labels.shape != indices.shape:
      raise ValueError(f"labels {labels.shape} and indices {indices.shape} differ in shape")
    if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise ValueError(f"labels out of range for {self.num_classes} photo classes: {labels}")
    return np.stack([photo_sample(int(c), int(i), self.image_size)
                     for c, i in zip(labels, indices)]) if labels.size else np.zeros(
                         (0, self.image_size, self.image_size, 3), np.float32)

  def images_of_classes(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    return self.load(labels, rng.integers(0, 2**31 - 1, size=len(labels)))


# --------------------------------------------------------------------------- TFDS

TFDS_DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet2012": (1000, 224)}


class DatasetNotPreparedError(FileNotFoundError):
  """The TFDS data are not in ``data_dir``; the message names the command to run."""


def _prepare_command(name: str, data_dir: str) -> str:
  manual = (f" (first place ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
            f"{os.path.join(data_dir, 'downloads', 'manual')})") if name == "imagenet2012" else ""
  return (f"pip install tensorflow-cpu && tfds build {name} --data_dir={data_dir} "
          f"--file_format=array_record{manual}")


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A TFDS image-classification dataset read from prepared array_record files.

  Attributes:
    name: ``'cifar10'``, ``'cifar100'`` or ``'imagenet2012'``.
    data_dir: directory holding the prepared dataset (never downloaded here).
    split: TFDS split; ImageNet defaults to ``'validation'`` (indexing 1.28M train
      labels is slow).
    image_size: output size; images are resized (shorter side) and centre-cropped.
  """

  name: str
  data_dir: str
  split: str = "train"
  image_size: int | None = None

  def __post_init__(self):
    if self.name not in TFDS_DATASETS:
      raise ValueError(f"dataset: unknown TFDS dataset {self.name!r}; "
                       f"choose one of {sorted(TFDS_DATASETS)} or 'photos'")

  @property
  def num_classes(self) -> int:
    return TFDS_DATASETS[self.name][0]

  @property
  def size(self) -> int:
    return self.image_size or TFDS_DATASETS[self.name][1]

  @functools.cached_property
  def data_source(self):
    """The `tfds.data_source` of the split (opened once per source object)."""
    return _tfds_data_source(self.name, self.data_dir, self.split)

  @functools.cached_property
  def class_index(self) -> dict[int, np.ndarray]:
    """Example indices of each class in the split (one pass over the labels, once)."""
    source = self.data_source
    labels = np.array([int(source[i]["label"]) for i in range(len(source))])
    return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}

  def images_of_classes(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    source, by_class = self.data_source, self.class_index
    images = []
    for label in labels:
      pool = by_class.get(int(label))
      if pool is None or not len(pool):
        raise ValueError(f"{self.name}/{self.split} has no example of class {label}")
      example = source[int(rng.choice(pool))]
      images.append(_to_float_image(np.asarray(example["image"]), self.size))
    return np.stack(images)


def _to_float_image(image: np.ndarray, size: int) -> np.ndarray:
  image = image.astype(np.float32) / 255.0
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  height, width = image.shape[:2]
  if (height, width) != (size, size):
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    image = skimage.transform.resize(image, (new_h, new_w), order=1, anti_aliasing=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    image = image[top:top + size, left:left + size]
  return np.clip(image, 0, 1).astype(np.float32)


def _tfds_data_source(name: str, data_dir: str, split: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises several types
    if not tfds.builder(name, data_dir=data_dir).is_prepared():  # metadata only
      raise DatasetNotPreparedError(
          f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r}. Downloading is "
          f"never attempted here; prepare it on a machine with internet access with: "
          f"{_prepare_command(name, data_dir)}") from e
    raise DatasetNotPreparedError(
        f"TFDS dataset {name!r} in data_dir={data_dir!r} cannot be read by random access "
        f"({type(e).__name__}: {str(e)[:160]}); rebuild it as array_record with: "
        f"{_prepare_command(name, data_dir)}") from e


def get_source(name: str, *, image_size: int, data_dir: str | None = None,
               split: str | None = None, num_classes: int | None = None) -> ImageSource:
  """The image source named ``name`` (``'photos'`` or a key of `TFDS_DATASETS`)."""
  if name == "photos":
    return Photos(image_size=image_size, num_classes=num_classes or len(PHOTO_CLASSES))
  if name not in TFDS_DATASETS:
    raise ValueError(f"dataset: unknown dataset {name!r}; choose 'photos' or one of "
                     f"{sorted(TFDS_DATASETS)}")
  if not data_dir:
    raise DatasetNotPreparedError(
        f"dataset {name!r} needs data_dir, a directory with the prepared TFDS data; prepare it "
        f"with: {_prepare_command(name, '<data_dir>')}, or use dataset='photos' (offline)")
  default_split = "validation" if name == "imagenet2012" else "train"
  return TfdsSource(name, data_dir, split or default_split, image_size)


# --------------------------------------------------------------------------- labels


class LabelDistKind(enum.Enum):
  """How the classes of a batch repeat (Geng et al., Sec. 5)."""

  UNIQUE = "unique"    # B distinct classes
  RANDOM = "random"    # i.i.d. uniform classes
  SINGLE = "single"    # one class r times, the other B - r distinct
  FACTOR = "factor"    # B / r classes, each exactly r times
  REPEAT = "repeat"    # every image of one class


@dataclasses.dataclass(frozen=True)
class LabelDist:
  kind: LabelDistKind
  r: int = 0

  def __str__(self) -> str:
    return f"{self.kind.value}:{self.r}" if self.kind in _NEEDS_R else self.kind.value


_NEEDS_R = (LabelDistKind.SINGLE, LabelDistKind.FACTOR)


def parse_label_dist(spec: str | LabelDist) -> LabelDist:
  """Parses ``'unique' | 'random' | 'single:r' | 'factor:r' | 'repeat'``."""
  if isinstance(spec, LabelDist):
    return spec
  name, _, arg = str(spec).partition(":")
  try:
    kind = LabelDistKind(name)
  except ValueError:
    raise ValueError(f"label_dist: unknown label distribution {spec!r}; use unique, random, "
                     "single:r, factor:r or repeat") from None
  if kind in _NEEDS_R:
    try:
      r = int(arg)
    except ValueError:
      raise ValueError(f"label_dist: {spec!r} needs an integer r, e.g. '{name}:2'") from None
    if r < 1:
      raise ValueError(f"label_dist: r must be >= 1 in {spec!r}")
    return LabelDist(kind, r)
  if arg:
    raise ValueError(f"label_dist: {name!r} takes no argument, got {spec!r}")
  return LabelDist(kind)


def check_label_dist(dist: str | LabelDist, *, batch_size: int, num_classes: int) -> LabelDist:
  """Validates that a batch of ``batch_size`` over ``num_classes`` can follow ``dist``."""
  dist = parse_label_dist(dist)
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if num_classes <= 0:
    raise ValueError(f"num_classes must be positive, got {num_classes}")
  needed = {LabelDistKind.UNIQUE: batch_size, LabelDistKind.RANDOM: 1,
            LabelDistKind.REPEAT: 1}.get(dist.kind)
  if dist.kind == LabelDistKind.SINGLE:
    if dist.r > batch_size:
      raise ValueError(f"label_dist {dist}: r={dist.r} exceeds batch_size {batch_size}")
    needed = batch_size - dist.r + 1
  elif dist.kind == LabelDistKind.FACTOR:
    if dist.r > batch_size or batch_size % dist.r:
      raise ValueError(f"label_dist {dist}: batch_size {batch_size} is not divisible by "
                       f"r={dist.r}")
    needed = batch_size // dist.r
  if needed > num_classes:
    raise ValueError(f"label_dist {dist} with batch_size {batch_size} needs {needed} distinct "
                     f"classes, but there are only {num_classes}")
  return dist


def numpy_rng(key: jax.Array) -> np.random.Generator:
  """A NumPy generator seeded by a JAX key (host-side sampling of data)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def sample_labels(key: jax.Array, *, batch_size: int, num_classes: int,
                  dist: str | LabelDist) -> np.ndarray:
  """Labels of one batch following ``dist``, in random order.

  Returns:
    ``[batch_size]`` int32.
  """
  dist = check_label_dist(dist, batch_size=batch_size, num_classes=num_classes)
  rng = numpy_rng(key)
  if dist.kind == LabelDistKind.RANDOM:
    labels = rng.integers(0, num_classes, size=batch_size)
  elif dist.kind == LabelDistKind.UNIQUE:
    labels = rng.choice(num_classes, size=batch_size, replace=False)
  elif dist.kind == LabelDistKind.REPEAT:
    labels = np.full(batch_size, rng.integers(0, num_classes))
  elif dist.kind == LabelDistKind.SINGLE:
    classes = rng.choice(num_classes, size=batch_size - dist.r + 1, replace=False)
    labels = np.concatenate([np.full(dist.r, classes[0]), classes[1:]])
  else:
    classes = rng.choice(num_classes, size=batch_size // dist.r, replace=False)
    labels = np.repeat(classes, dist.r)
  return rng.permutation(labels).astype(np.int32)


def mislabel(key: jax.Array, labels: np.ndarray, *, num_wrong: int, num_classes: int
             ) -> np.ndarray:
  """``labels`` with ``num_wrong`` of them replaced by another class.

  The label hypothesis of Geng et al.'s (arXiv 2110.09074) finding that one wrong label
  in the batch breaks image recovery: the positions and the new classes are drawn from
  ``key``, and each new class differs from the one it replaces (it may be another
  class of the batch, which then looks duplicated).

  Args:
    key: JAX PRNG key.
    labels: ``[B]`` true labels.
    num_wrong: how many to change, 0 to B.
    num_classes: N (at least 2).

  Returns:
    ``[B]`` int32, in the order of ``labels``.
  """
  labels = np.asarray(labels, np.int32)
  if not 0 <= num_wrong <= labels.shape[0]:
    raise ValueError(f"num_wrong must be between 0 and the batch size {labels.shape[0]}, "
                     f"got {num_wrong}")
  if num_classes < 2:
    raise ValueError(f"a wrong label needs at least 2 classes, got num_classes={num_classes}")
  rng = numpy_rng(key)
  where = rng.choice(labels.shape[0], size=num_wrong, replace=False)
  out = labels.copy()
  out[where] = (labels[where] + rng.integers(1, num_classes, size=num_wrong)) % num_classes
  return out


def sample_batch(key: jax.Array, *, source: ImageSource, batch_size: int,
                 label_dist: str | LabelDist) -> tuple[np.ndarray, np.ndarray]:
  """A client batch: labels drawn from ``label_dist``, one image per label.

  Args:
    key: JAX PRNG key; the same key gives the same batch.
    source: `Photos` or `TfdsSource`.
    batch_size: B.
    label_dist: a `LabelDist` or its spec string.

  Returns:
    ``(images [B, S, S, 3] float32 in [0, 1], labels [B] int32)``.
  """
  label_key, image_key = jax.random.split(key)
  labels = sample_labels(label_key, batch_size=batch_size, num_classes=source.num_classes,
                         dist=label_dist)
  images = source.images_of_classes(numpy_rng(image_key), labels)
  return images, labels
