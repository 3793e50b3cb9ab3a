"""Count vectors: the last layer's gradient, rounding scores to counts, ranked alternatives,
every vector on a given set of classes or of a small head, how far scores sit from integers.

Shared by the label estimators of `jaxinvert.labels` and the per-image logit fit of
`jaxinvert.label_fit`.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinvert.types import CLASSIFIER, Params, Variables


def classifier_grads(update: Params) -> tuple[jax.Array, jax.Array | None]:
  """The last layer's weight gradient as ``[N, d]`` and its bias gradient ``[N]`` (or None)."""
  if not isinstance(update, dict) or CLASSIFIER not in update or "kernel" not in update[
      CLASSIFIER]:
    keys = list(update) if isinstance(update, dict) else type(update).__name__
    raise ValueError(f"the update has no last layer {CLASSIFIER!r} with a 'kernel'; got {keys}")
  layer = update[CLASSIFIER]
  return jnp.asarray(layer["kernel"]).T, (None if layer.get("bias") is None else
                                          jnp.asarray(layer["bias"]))


def class_features(update: Params) -> jax.Array:
  """iLRG's class-wise mean features ``dW_n / db_n`` ``[N, d]`` (Ma et al., ICLR 2023): exact
  for a class whose images share one feature vector when no other image puts mass on it.
  A zero bias gradient is replaced by 1e-30."""
  weight, bias = classifier_grads(update)
  if bias is None:
    raise ValueError("class features need a last layer with a bias")
  return weight / jnp.where(jnp.abs(bias) > 1e-30, bias, 1e-30)[:, None]


def check_update(update: Params, variables: Variables, num_images: int) -> None:
  """Raises ValueError for K <= 0, a last layer not matching the model, or NaN/Inf."""
  if num_images <= 0:
    raise ValueError(f"num_images (K) must be positive, got {num_images}")
  weight, bias = classifier_grads(update)
  kernel = variables["params"][CLASSIFIER]["kernel"]
  if weight.shape != kernel.T.shape:
    raise ValueError(f"the update's last layer has shape {weight.T.shape}, the model's "
                     f"{kernel.shape}")
  try:
    finite = bool(jnp.all(jnp.isfinite(weight))) and (bias is None or bool(
        jnp.all(jnp.isfinite(bias))))
  except jax.errors.ConcretizationTypeError:
    return  # traced: values unknown here
  if not finite:
    raise ValueError("the update's last layer contains NaN or Inf")


def present_classes(update: Params, *, nonnegative_features: bool = False
                    ) -> jax.Array | None:
  """Classes certainly in the batch, bool ``[N]`` (None without a bias or such features).

  With mean cross-entropy, ``db_n = (1/K) sum_k (p_kn - y_kn)`` and every softmax entry
  ``p_kn`` is positive, so ``db_n < 0`` needs an image of class n (iDLG's sign argument,
  Zhao et al. 2020, for any K). Likewise ``dW_nj = (1/K) sum_k (p_kn - y_kn) o_kj``: with
  features ``o >= 0`` (ReLU, sigmoid) any negative entry of row n needs an image of class
  n, which is why GradInversion's row minima find unique labels (Yin et al., 2021). The
  average gradient of a FedAvg round of plain SGD is a positive combination of such
  per-step gradients (and float rounding of a monotone SGD trajectory keeps the signs),
  so the same holds there.

  Args:
    update: gradient tree (FedSGD, or a FedAvg average gradient).
    nonnegative_features: the classifier's inputs are >= 0, so the weight rows count.
  """
  weight, bias = classifier_grads(update)
  rows = jnp.any(weight < 0, axis=1) if nonnegative_features else None
  if bias is None:
    return rows
  return bias < 0 if rows is None else (bias < 0) | rows


def round_counts(scores: jax.Array, num_images: int,
                 minimum: jax.Array | None = None) -> jax.Array:
  """The non-negative integer vector summing to K nearest to ``scores`` (squared error).

  Greedy unit allocation, which is optimal for this separable convex cost: each of
  the K units goes to the class with the largest ``scores_n - counts_n``. With
  ``minimum`` (int or bool ``[N]``, summing to at most K) the counts start there and
  only the remaining units are allocated.
  """
  if isinstance(num_images, int) and num_images <= 0:
    raise ValueError(f"num_images (K) must be positive, got {num_images}")
  scores = jnp.asarray(scores, jnp.float32)
  start = (jnp.zeros(scores.shape, jnp.int32) if minimum is None
           else jnp.asarray(minimum, jnp.int32))

  def add_one(_, counts):
    return counts.at[jnp.argmax(scores - counts)].add(1)

  units = num_images if minimum is None else num_images - jnp.sum(start)
  return jax.lax.fori_loop(0, units, add_one, start)


def hypotheses(scores: jax.Array, *, num_images: int, num: int, candidates: int = 8,
               strict: bool = True, minimum: jax.Array | None = None) -> jax.Array:
  """The ``num`` most likely count vectors, best first, all distinct.

  Likelihood: squared distance to ``scores``. Alternatives to `round_counts` move one
  or two units between the ``candidates`` classes whose cheapest valid unit move costs
  least: with d = score - rounded count, giving a unit away adds 1 + 2d to the squared
  distance (only where the count is above its minimum) and taking one adds 1 - 2d.
  Ties, e.g. scores that sit on integers, go to the classes that can give a unit, so
  that alternatives exist however integral the scores are.

  Args:
    scores: real-valued counts ``[N]``.
    num_images: K, the sum of every count vector.
    num: how many vectors.
    candidates: classes among which units move.
    strict: raise when fewer than ``num`` distinct valid vectors exist; with False the
      tail is padded with repeated or invalid (negative) rows, which callers must mask
      (`jaxinvert.label_fit` does), so that the shape is static under any scores.
    minimum: int ``[N]`` counts every vector must reach (`round_counts`), e.g. the
      classes certainly in the batch; vectors below it count as invalid.

  Returns:
    ``[num, N]`` int32.

  Raises:
    ValueError: fewer distinct count vectors exist among the moves than ``num`` (strict).
  """
  if num <= 0:
    raise ValueError(f"the number of hypotheses must be positive, got {num}")
  scores = jnp.asarray(scores, jnp.float32)
  best = round_counts(scores, num_images, minimum=minimum)
  if num == 1:
    return best[None]
  n_classes = scores.shape[0]
  m = min(candidates, n_classes)
  floor = 0 if minimum is None else jnp.asarray(minimum, jnp.int32)
  offset = scores - best
  can_give = best > floor
  move_cost = jnp.minimum(jnp.where(can_give, 1 + 2 * offset, jnp.inf), 1 - 2 * offset)
  cand = jnp.lexsort((jnp.logical_not(can_give), move_cost))[:m]
  pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
  moves = [()] + [(p,) for p in pairs] + list(itertools.combinations(pairs, 2))
  slot_delta = np.zeros((len(moves), m), np.int32)  # in candidate slots, static
  for row, move in enumerate(moves):
    for i, j in move:
      slot_delta[row, i] += 1
      slot_delta[row, j] -= 1
  # Different moves can give one vector; as the candidate classes are distinct, exactly
  # when their slot changes are equal. Keep the first of each, statically (comparing the
  # [moves, moves, N] vectors took 2.5 GB per call at N = 1000).
  _, first = np.unique(slot_delta, axis=0, return_index=True)
  slot_delta = slot_delta[np.sort(first)]
  options = best[None] + jnp.asarray(slot_delta) @ jax.nn.one_hot(cand, n_classes,
                                                                 dtype=jnp.int32)
  cost = jnp.sum(jnp.square(options - scores[None]), axis=1)
  cost = jnp.where(jnp.all(options >= jnp.asarray(floor)[None], axis=1), cost, jnp.inf)
  order = jnp.argsort(cost, stable=True)
  if not strict:  # static shape: cycle through the options when there are fewer than num
    return options[order[np.arange(num) % options.shape[0]]]
  try:
    available = int(jnp.sum(jnp.isfinite(cost)))
  except jax.errors.ConcretizationTypeError:
    available = num
  if available < num:
    raise ValueError(f"asked for {num} label hypotheses, only {available} distinct ones exist "
                     f"within two unit moves")
  return options[order[:num]]


def num_count_vectors(num_images: int, num_classes: int) -> int:
  """How many count vectors K images have over N classes: ``C(K + N - 1, N - 1)``
  (5 for K = 4 on 2 classes, 45 for K = 8 on 3, 1001 for K = 10 on 5)."""
  if num_images <= 0 or num_classes <= 0:
    raise ValueError(f"the numbers of images and classes must be positive, got "
                     f"{num_images} and {num_classes}")
  return math.comb(num_images + num_classes - 1, num_classes - 1)


def every_count_vector(num_images: int, num_classes: int) -> np.ndarray:
  """Every count vector of K images over N classes (stars and bars), ``[C(K + N - 1,
  N - 1), N]`` int32, in lexicographic order (all K images in the last class first).

  Raises:
    ValueError: K or N not positive.
  """
  num_count_vectors(num_images, num_classes)  # validates
  rows = [np.diff((-1, *bars, num_images + num_classes - 1)) - 1
          for bars in itertools.combinations(range(num_images + num_classes - 1),
                                             num_classes - 1)]
  return np.asarray(rows, np.int32)


def candidates(scores: jax.Array, *, num_images: int, num: int) -> jax.Array:
  """Count vectors for a re-scoring stage to try (e.g. the attack's matching loss), best
  first where they are ranked.

  Every count vector when there are at most ``num`` (small heads and batches, where a
  closed form's scores can sit several units from the truth), ranked by squared distance
  to ``scores`` as `hypotheses` ranks; else the ``num`` best `hypotheses` of ``scores``,
  and where fewer than ``num`` valid ones exist within two unit moves the tail repeats
  the best vector (valid, never negative). Static shape.

  Args:
    scores: real-valued counts ``[N]``.
    num_images: K.
    num: the most vectors to return (>= 1).

  Returns:
    ``[min(num, C(K + N - 1, N - 1)), N]`` int32, best first.
  """
  if num <= 0:
    raise ValueError(f"the number of candidates must be positive, got {num}")
  num_classes = jnp.shape(scores)[-1]
  if num_count_vectors(num_images, num_classes) <= num:
    every = jnp.asarray(every_count_vector(num_images, num_classes))
    cost = jnp.sum(jnp.square(every - jnp.asarray(scores, jnp.float32)[None]), axis=1)
    return every[jnp.argsort(cost, stable=True)]
  ranked = hypotheses(scores, num_images=num_images, num=num, strict=False)
  valid = jnp.all(ranked >= 0, axis=1) & (jnp.sum(ranked, axis=1) == num_images)
  return jnp.where(valid[:, None], ranked, ranked[:1])


def distinct(vectors: jax.Array | np.ndarray) -> np.ndarray:
  """The rows of ``vectors`` once each, in the order they first appear (host side):
  `candidates` repeats its best vector to fill a static shape, and a re-scoring stage
  should try each vector once.

  Args:
    vectors: ``[H, N]`` count vectors (or any rows).

  Returns:
    ``[H', N]`` with H' <= H, the first occurrence of each row, best first kept.
  """
  vectors = np.asarray(vectors)
  _, first = np.unique(vectors, axis=0, return_index=True)
  return vectors[np.sort(first)]


def support_size(num_images: int) -> int:
  """Rows of `on_support`: the most count vectors any set of classes holds,
  ``C(K - 1, floor((K - 1) / 2))`` (35 at K = 8, 126 at K = 10, 6435 at K = 16)."""
  if num_images <= 0:
    raise ValueError(f"the number of images must be positive, got {num_images}")
  return math.comb(num_images - 1, (num_images - 1) // 2)


@functools.lru_cache(maxsize=None)
def _compositions(num_images: int) -> np.ndarray:
  """``[K, support_size(K), K]`` int32: at ``m - 1``, the compositions of K into m positive
  parts (stars and bars: the C(K - 1, m - 1) ways to cut 1..K-1), in the first m columns,
  rows repeated to the common length."""
  table = np.zeros((num_images, support_size(num_images), num_images), np.int32)
  for m in range(1, num_images + 1):
    rows = [np.diff((0, *cuts, num_images))
            for cuts in itertools.combinations(range(1, num_images), m - 1)]
    table[m - 1, :, :m] = np.resize(np.asarray(rows, np.int32), (table.shape[1], m))
  return table


def on_support(classes: jax.Array, *, num_images: int) -> jax.Array:
  """Every count vector with at least one image in each of ``classes`` and none elsewhere.

  Ours, for `jaxinvert.label_fit.search`: where the sign rule (`present_classes`) has found
  every class of the batch, the true count vector is one of these, however far the
  estimators' scores sit from it. Static shape: m classes hold C(K - 1, m - 1) vectors,
  and the rows repeat up to `support_size`.

  Args:
    classes: bool ``[N]``.
    num_images: K.

  Returns:
    ``[support_size(K), N]`` int32; every entry -1 (no valid count vector) when no class
    or more than K classes are given.
  """
  classes = jnp.asarray(classes, bool)
  num = jnp.sum(classes)
  slots = jnp.asarray(_compositions(num_images))[jnp.clip(num, 1, num_images) - 1]
  order = jnp.argsort(~classes, stable=True)[:num_images]  # the given classes first
  vectors = slots @ jax.nn.one_hot(order, classes.shape[0], dtype=jnp.int32)
  return jnp.where((num >= 1) & (num <= num_images), vectors, -1)


def integrality_residual(scores: jax.Array, num_images: int) -> jax.Array:
  """``sum_n |scores_n - counts_n|`` with counts = `round_counts`: how far an estimate is
  from the integer count vector it rounds to. Exact counts make it zero; an estimator
  whose model of the batch is wrong scatters its scores between integers."""
  return jnp.sum(jnp.abs(scores - round_counts(scores, num_images)))


def fractional_distance(scores: jax.Array, num_images: int) -> jax.Array:
  """Mean ``|scores_n - counts_n|`` over the classes that `round_counts` puts in the batch
  (counts_n >= 1). About 0.25 for scores whose fractional parts are uniform; near 0 for
  an estimator whose model of the victim holds. Classes rounded to zero are left out,
  so an estimator that clips absent classes to exactly 0 (`cluster`) is not made to
  look integral by them (ours, the gate of `jaxinvert.labels.select`).

  Args:
    scores: real-valued counts ``[N]``.
    num_images: K.

  Returns:
    A scalar, 0 when every class in the batch sits on an integer.
  """
  counts = round_counts(scores, num_images)
  present = counts >= 1
  return (jnp.sum(jnp.where(present, jnp.abs(scores - counts), 0.0))
          / jnp.maximum(jnp.sum(present), 1))
