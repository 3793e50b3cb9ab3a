"""How well an attack did: image quality after matching, and label recovery.

The only module that sees the ground truth. Conventions follow Geng et al.'s code
and the field: PSNR and SSIM on images in [0, 1] (data range 1, dm-pix), each
reconstruction matched to one original by Hungarian assignment on PSNR (scipy), and
label accuracy = |multiset intersection of predicted and true labels| / B.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize


def _unit_range(images: jax.Array) -> jax.Array:
  """Float32 images; integer images (uint8 0-255) are refused, not rescaled silently."""
  if not jnp.issubdtype(jnp.result_type(images), jnp.floating):
    raise ValueError("images must be floats in [0, 1] (data range 1), got dtype "
                     f"{jnp.result_type(images)}; divide 8-bit images by 255")
  return jnp.asarray(images, jnp.float32)


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio in dB per image, data range 1 (dm-pix).

  Args:
    a, b: ``[..., H, W, C]`` float images in [0, 1].

  Returns:
    ``[...]`` PSNR; +inf for identical images.

  Raises:
    ValueError: integer images (e.g. uint8 in 0-255).
  """
  return pix.psnr(_unit_range(a), _unit_range(b))


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  """Structural similarity per image (Wang et al., 2004; dm-pix, 11x11 Gaussian window),
  of float images in [0, 1] (integer images are refused, as by `psnr`)."""
  return pix.ssim(_unit_range(a), _unit_range(b), max_val=1.0)


def pairwise_psnr(reconstructions: jax.Array, originals: jax.Array) -> jax.Array:
  """``[R, O]`` PSNR of every reconstruction against every original."""
  return jax.vmap(lambda r: jax.vmap(lambda o: psnr(r, o))(originals))(reconstructions)


def match(reconstructions: jax.Array, originals: jax.Array) -> np.ndarray:
  """Which reconstruction stands for which original (Hungarian assignment on PSNR).

  Returns:
    ``perm`` with ``reconstructions[perm[i]]`` matched to ``originals[i]``.
  """
  if reconstructions.shape != originals.shape:
    raise ValueError(f"reconstructions {reconstructions.shape} and originals "
                     f"{originals.shape} differ in shape")
  scores = np.asarray(pairwise_psnr(reconstructions, originals), np.float64)
  scores = np.nan_to_num(scores, nan=-1e9, posinf=1e9)
  rows, cols = scipy.optimize.linear_sum_assignment(scores, maximize=True)
  perm = np.empty(len(cols), dtype=np.int64)
  perm[cols] = rows
  return perm


def label_accuracy(predicted: Sequence[int], true: Sequence[int]) -> float:
  """|multiset(predicted) ∩ multiset(true)| / len(true) (Geng et al.'s label accuracy)."""
  true = np.asarray(true).ravel().tolist()
  predicted = np.asarray(predicted).ravel().tolist()
  if not true:
    raise ValueError("label_accuracy needs at least one true label")
  if len(predicted) != len(true):
    raise ValueError(f"label_accuracy compares labels of one batch: {len(predicted)} "
                     f"predicted against {len(true)} true")
  common = collections.Counter(predicted) & collections.Counter(true)
  return sum(common.values()) / len(true)


def labels_exact(predicted: Sequence[int], true: Sequence[int]) -> bool:
  """Whether the predicted label multiset equals the true one (the count vector is exact)."""
  return sorted(np.asarray(predicted).ravel().tolist()) == sorted(
      np.asarray(true).ravel().tolist())


def counts_to_labels(counts: Sequence[int]) -> np.ndarray:
  """Count vector ``[N]`` -> sorted label list with ``counts[n]`` copies of ``n``."""
  counts = np.asarray(counts)
  return np.repeat(np.arange(len(counts)), counts).astype(np.int32)


def blend(matched: jax.Array, originals: jax.Array, labels: Sequence[int]
          ) -> dict[str, float | None]:
  """How far each reconstruction has moved towards another image of the batch.

  Geng et al. (arXiv 2110.09074) observe that images of one label in a batch come back
  fused into one blend of the class. For an ordered pair of images i, j this projects
  the reconstruction r_i onto the segment from x_i to x_j (ours):
  ``t_ij = <r_i - x_i, x_j - x_i> / |x_j - x_i|^2``, so 0 is x_i itself, 0.5 an even blend
  of the two and 1 the other image; noise orthogonal to the segment does not move it.
  Averaged over the ordered pairs that share a true label and, as the control, over
  those that do not.

  Args:
    matched: ``[B, H, W, C]`` reconstructions, ``matched[i]`` matched to ``originals[i]``
      (`match`).
    originals: ``[B, H, W, C]``.
    labels: ``[B]`` true labels, in the originals' order.

  Returns:
    ``{"same_label": mean t or None, "different_label": mean t or None}`` (None where the
    batch has no such pair).
  """
  labels = np.asarray(labels).ravel()
  if labels.shape[0] != originals.shape[0] or matched.shape != originals.shape:
    raise ValueError(f"matched {matched.shape}, originals {originals.shape} and "
                     f"{labels.shape[0]} labels disagree")
  r = np.asarray(matched, np.float64).reshape(labels.shape[0], -1)
  x = np.asarray(originals, np.float64).reshape(labels.shape[0], -1)
  i, j = np.nonzero(~np.eye(labels.shape[0], dtype=bool))
  step = x[j] - x[i]
  t = np.sum((r[i] - x[i]) * step, axis=1) / np.maximum(np.sum(step * step, axis=1), 1e-12)
  same = labels[i] == labels[j]
  mean = lambda m: float(t[m].mean()) if m.any() else None
  return {"same_label": mean(same), "different_label": mean(~same)}


def reconstruction_report(reconstructions: jax.Array, originals: jax.Array,
                          predicted_labels: Sequence[int], true_labels: Sequence[int]
                          ) -> dict[str, Any]:
  """All figures of one attack, ground truth used here only.

  Returns:
    dict with ``psnr`` and ``ssim`` (means after matching), ``per_image_psnr``,
    ``per_image_ssim`` (in the originals' order), ``matching`` (the permutation),
    ``label_accuracy``, ``labels_exact`` and ``blend`` (`blend`).
  """
  reconstructions = jnp.clip(jnp.asarray(reconstructions, jnp.float32), 0.0, 1.0)
  perm = match(reconstructions, originals)
  matched = reconstructions[perm]
  per_psnr = np.asarray(psnr(matched, originals), np.float64)
  per_ssim = np.asarray(ssim(matched, originals), np.float64)
  return {
      "psnr": float(per_psnr.mean()),
      "ssim": float(per_ssim.mean()),
      "per_image_psnr": per_psnr.tolist(),
      "per_image_ssim": per_ssim.tolist(),
      "matching": perm.tolist(),
      "label_accuracy": label_accuracy(predicted_labels, true_labels),
      "labels_exact": labels_exact(predicted_labels, true_labels),
      "blend": blend(matched, originals, true_labels),
  }
