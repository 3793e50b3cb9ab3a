r"""Closed-form label-count estimators over a last layer's gradient (one batch, no fit).

Notation and the bias / weight forms: `jaxinvert.labels`. Here: Geng et al.'s forms with
dummy statistics (`geng`, `geng_bias`), their re-centred bias form (`recentred`, ours),
the baselines iDLG, GradInversion, LLG+ and iLRG, iLRG's cluster model fitted
self-consistently (`cluster`, ours), and the sign rule's flagged classes
(`certain_classes`). Each is ``(key?, *, update, ...) -> LabelEstimate``, jit- and
vmap-able over trials. The rules that combine them (`select`, `with_present`):
`jaxinvert.label_rules`. `jaxinvert.labels.restore` dispatches among all of them.
The dummy images they read statistics from: `jaxinvert.label_dummies`.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinvert.counts import class_features, classifier_grads, present_classes, round_counts
from jaxinvert.label_dummies import DummyDist, FeaturesFn, dummy_statistics
from jaxinvert.types import CLASSIFIER, Params, Variables


class LabelEstimate(NamedTuple):
  """Attributes: ``scores`` real-valued counts ``[N]``; ``counts`` their rounding, int32
  ``[N]``, non-negative and summing to K."""

  scores: jax.Array
  counts: jax.Array


class FeatureDomain(enum.Enum):
  """Range of the classifier's input features (the last activation)."""

  NONNEGATIVE = "nonnegative"  # ReLU, softplus
  UNIT = "unit"                # sigmoid
  REAL = "real"                # no activation


_DOMAIN_RANGE = {FeatureDomain.NONNEGATIVE: (0.0, jnp.inf), FeatureDomain.UNIT: (0.0, 1.0),
                 FeatureDomain.REAL: (-jnp.inf, jnp.inf)}


# ----------------------------------------------------------------- shared pieces


def _estimate(scores: jax.Array, num_images: int) -> LabelEstimate:
  return LabelEstimate(scores, round_counts(scores, num_images))


# ----------------------------------------------------------------- Geng et al.


def geng(key: jax.Array, *, update: Params, features_fn: FeaturesFn, variables: Variables,
         num_images: int, image_shape, num_dummies: int | None = None,
         dummy_dist: DummyDist = DummyDist.UNIFORM) -> LabelEstimate:
  """Geng et al.'s published weight form: c_n = K mean_k p_kn - K sum_j dW_nj / O.

  p and O come from ``num_dummies`` (default K) dummy images.
  """
  weight, _ = classifier_grads(update)
  p, big_o, _ = dummy_statistics(key, features_fn=features_fn, variables=variables,
                                 image_shape=image_shape,
                                 num_dummies=num_dummies or num_images, dummy_dist=dummy_dist)
  scores = num_images * p.mean(axis=0) - num_images * weight.sum(axis=1) / big_o.mean()
  return _estimate(scores, num_images)


def geng_bias(key: jax.Array, *, update: Params, features_fn: FeaturesFn,
              variables: Variables, num_images: int, image_shape,
              num_dummies: int | None = None,
              dummy_dist: DummyDist = DummyDist.UNIFORM) -> LabelEstimate:
  """The bias form with Geng et al.'s dummy estimate of p: c_n = K mean_k p_kn - K db_n."""
  _, bias = classifier_grads(update)
  if bias is None:
    raise ValueError("geng_bias needs a last layer with a bias")
  p, _, _ = dummy_statistics(key, features_fn=features_fn, variables=variables,
                             image_shape=image_shape, num_dummies=num_dummies or num_images,
                             dummy_dist=dummy_dist)
  return _estimate(num_images * p.mean(axis=0) - num_images * bias, num_images)


#: RECENTRED's own dummies (also within SELECT and FIT via `jaxinvert.labels.restore`) on
#: a FedSGD gradient unless ``dummy_dist`` says otherwise: U(0, 1) noise with a
#: brightness and contrast drawn per image (`jittered_images`); measured against U(0, 1)
#: in docs/labels.md ("Jittered dummies").
OUR_DUMMIES = DummyDist.JITTERED


def recentred(key: jax.Array, *, update: Params, features_fn: FeaturesFn,
              variables: Variables, num_images: int, image_shape,
              num_dummies: int | None = None, dummy_dist: DummyDist = OUR_DUMMIES,
              feature_domain: FeatureDomain | None = None, rounds: int = 2
              ) -> LabelEstimate:
  """The bias form with dummy features re-centred on the batch's own (ours).

  Geng et al.'s bias form ``c_n = S_n - K db_n`` needs the batch's softmax mass
  ``S_n = sum_k p_kn``; dummy images (`geng_bias`) miss it because their features are
  not the batch's. The rows of classes absent from the batch hold the batch's features
  exactly: for such a class m, ``K dW_m = sum_k p_km o_k`` and ``K db_m = S_m``, so
  pooled over a set A of absent classes, ``sum_A K dW_m / sum_A K db_m`` is the mean
  feature of the batch weighted by ``p_kA = sum_{m in A} p_km`` (the rows iLRG reads as
  class features, Ma et al., ICLR 2023, read here for the classes *not* in the batch).
  The dummy features are shifted so that their mean under the same weighting equals it,
  and ``S`` is their mean softmax times K.

  A is first the classes with a positive bias gradient that the sign rule does not
  flag (`certain_classes`), then, for ``rounds - 1`` more rounds, the unflagged classes
  that the previous estimate rounds to zero. With no such class (e.g. i.i.d. batches
  much larger than N, where every class is present) the mean feature is regressed from
  every class's row instead (`_regressed_mean`: the rows of present classes hold it
  too, times their known bias gradient, plus their images' deviations). The shift
  captures the batch's mean feature, not how its images spread around it: exact counts
  on untrained victims where the mean is all the dummies miss, no help once the victim
  is confident (docs/labels.md).

  Args:
    key: PRNG key for the dummy images.
    update, features_fn, variables, num_images, image_shape, num_dummies: as `geng_bias`.
    dummy_dist: as `geng_bias`; by default `OUR_DUMMIES`, as `jaxinvert.labels.restore`
      gives it.
    feature_domain: range of the features, for the sign rule and to clip the shifted
      dummy features; None = non-negative.
    rounds: estimates of the absent set A (>= 1).

  Returns:
    A `LabelEstimate`.
  """
  if rounds < 1:
    raise ValueError(f"rounds must be >= 1, got {rounds}")
  domain = FeatureDomain.NONNEGATIVE if feature_domain is None else FeatureDomain(
      feature_domain)
  weight, bias = classifier_grads(update)
  if bias is None:
    raise ValueError("recentred needs a last layer with a bias")
  p, _, features = dummy_statistics(key, features_fn=features_fn, variables=variables,
                                    image_shape=image_shape,
                                    num_dummies=num_dummies or num_images,
                                    dummy_dist=dummy_dist)
  layer = variables["params"][CLASSIFIER]
  lower, upper = _DOMAIN_RANGE[domain]
  k_dw, k_db = num_images * weight, num_images * bias
  flagged = certain_classes(update, num_images, domain) > 0
  fallback = num_images * p.mean(axis=0) - k_db
  absent = (k_db > 0) & ~flagged
  scores = fallback
  for _ in range(rounds):
    mask = absent.astype(jnp.float32)
    mass = mask @ k_db
    target = (mask @ k_dw) / jnp.maximum(mass, 1e-30)
    dummy_weight = p @ mask                                     # [M]
    dummy_mean = (dummy_weight @ features) / jnp.maximum(jnp.sum(dummy_weight), 1e-30)
    shifted = jnp.clip(features - dummy_mean + target, lower, upper)
    probs = jax.nn.softmax(shifted @ layer["kernel"] + layer["bias"])
    scores = jnp.where(mass > 0, num_images * probs.mean(axis=0) - k_db, fallback)
    absent = (round_counts(scores, num_images) == 0) & ~flagged
  # No absent class to read the mean feature from: regress it from every class's row.
  target = _regressed_mean(features, k_dw, k_db, kernel=layer["kernel"], bias=layer["bias"],
                           lower=lower, upper=upper, num_images=num_images)
  probs, _ = _shifted_statistics(features, target, kernel=layer["kernel"], bias=layer["bias"],
                                 lower=lower, upper=upper, num_images=num_images)
  scores = jnp.where(mass > 0, scores, num_images * probs.mean(axis=0) - k_db)
  return _estimate(scores, num_images)


def _shifted_statistics(features: jax.Array, target: jax.Array, *, kernel: jax.Array,
                        bias: jax.Array, lower: float, upper: float, num_images: int
                        ) -> tuple[jax.Array, jax.Array]:
  """Softmax ``[M, N]`` of the dummy features shifted to mean ``target`` (clipped to the
  feature domain), and K times their covariance with the features, ``[N, d]``: the
  part of ``sum_k p_kn o_k`` that the mean feature does not give."""
  shifted = jnp.clip(features - features.mean(axis=0) + target, lower, upper)
  probs = jax.nn.softmax(shifted @ kernel + bias)
  cov = num_images * ((probs - probs.mean(axis=0)).T
                      @ (shifted - shifted.mean(axis=0))) / shifted.shape[0]
  return probs, cov


def _regressed_mean(features: jax.Array, k_dw: jax.Array, k_db: jax.Array, *,
                    kernel: jax.Array, bias: jax.Array, lower: float, upper: float,
                    num_images: int, eps: float = 0.25, iterations: int = 3) -> jax.Array:
  r"""The batch's mean feature regressed from every class's row (ours; `recentred`).

  With ``o_k = obar + delta_k``, each row is
  ``K dW_n = K db_n obar + sum_k p_kn delta_k - sum_{k: y_k = n} delta_k``: the mean
  feature times the *known* ``K db_n``, a covariance term that the re-centred dummies
  estimate (`_shifted_statistics`), and the class's own deviations, treated as noise of
  variance proportional to its count ``c_n``. Weighted least squares with weights
  ``1 / (eps + c_n)`` (counts from the current estimate), ``iterations`` times. The
  estimate is then shrunk towards the dummies' own mean feature by
  ``max(0, 1 - E|error|^2 / |obar - dummy mean|^2)``, the expected squared error read
  from the weighted residuals: where the dummies already have the batch's mean (e.g.
  ResNet-18's global pooling after BatchNorm) the noisy regression is not used. With
  two classes the fit leaves no residual to read that error from and the dummies' mean
  is returned. Absent classes (``c_n = 0``) enter with the largest weight, as in
  `recentred`'s pooled rows.

  Args:
    features: dummy features ``[M, d]``.
    k_dw, k_db: the last layer's gradients times K, ``[N, d]`` and ``[N]``.
    kernel, bias: the last layer, ``[d, N]`` and ``[N]``.
    lower, upper: the feature domain (shifted dummies are clipped to it).
    num_images: K.
    eps: the weights' floor term (0.25, chosen among 1, 0.25 and 0.05 on the held-in
      label cells).
    iterations: re-weighting rounds.

  Returns:
    The mean feature ``[d]``.
  """
  num_classes, dim = k_dw.shape
  base = features.mean(axis=0)
  # The rows, the bias gradients and the covariance terms each sum to zero over classes,
  # and obar takes d: the residuals have (N - 2) d degrees of freedom. With two classes
  # that is none, the fit is exact whatever obar's error, and the dummies' mean is kept
  # (without regressing at all). Above two the divisor stays (N - 1) d, as when eps and
  # this shrinkage were chosen: (N - 2) d moved SELECT by -3 exact batches of 1,200 on
  # 5- and 10-class heads (docs/labels.md, "Small heads").
  if num_classes <= 2:
    return base
  stats = lambda t: _shifted_statistics(features, t, kernel=kernel, bias=bias, lower=lower,
                                        upper=upper, num_images=num_images)

  def solve(obar):
    probs, cov = stats(obar)
    weights = 1.0 / (eps + jnp.maximum(num_images * probs.mean(axis=0) - k_db, 0.0))
    return (((weights * k_db) @ (k_dw - cov)) / jnp.maximum(jnp.sum(weights * k_db ** 2), 1e-30),
            weights, cov)

  obar = (k_db @ k_dw) / jnp.maximum(jnp.sum(k_db ** 2), 1e-30)
  for _ in range(iterations):
    obar, _, _ = solve(obar)
  _, weights, cov = solve(obar)
  residual = k_dw - cov - k_db[:, None] * obar[None]
  noise = jnp.sum(weights[:, None] * residual ** 2) / ((num_classes - 1) * dim)
  error = dim * noise / jnp.maximum(jnp.sum(weights * k_db ** 2), 1e-30)
  gap = jnp.sum((obar - base) ** 2)
  shrink = jnp.clip(1.0 - error / jnp.maximum(gap, 1e-30), 0.0, 1.0)
  return base + shrink * (obar - base)


# ----------------------------------------------------------------- baselines


def idlg(update: Params, *, num_images: int = 1) -> LabelEstimate:
  """iDLG (Zhao et al., 2020): the one class whose last-layer gradient is negative.

  Exact for K = 1 (dL/db_n = p_n - y_n < 0 only for the true class; with
  non-negative features the weight row has the same sign). For K > 1 it gives all K
  images that class, which is right only when the whole batch shares it.
  """
  weight, bias = classifier_grads(update)
  score = bias if bias is not None else weight.sum(axis=1)
  counts = num_images * jax.nn.one_hot(jnp.argmin(score), score.shape[0], dtype=jnp.int32)
  return LabelEstimate(counts.astype(jnp.float32), counts)


def gradinversion(update: Params, *, num_images: int) -> LabelEstimate:
  """GradInversion (Yin et al., CVPR 2021, Sec. 3.1): the K classes whose weight-gradient
  rows have the most negative minima, each once. Assumes unique labels and K <= N."""
  weight, _ = classifier_grads(update)
  row_min = weight.min(axis=1)
  if num_images > row_min.shape[0]:
    raise ValueError(f"gradinversion assumes K <= N distinct labels; K={num_images}, "
                     f"N={row_min.shape[0]}")
  top = jnp.argsort(row_min)[:num_images]
  counts = jnp.zeros(row_min.shape, jnp.int32).at[top].set(1)
  return LabelEstimate(-row_min, counts)


def llg_plus(key: jax.Array, *, update: Params, features_fn: FeaturesFn, variables: Variables,
             num_images: int, image_shape, num_dummies: int | None = None,
             dummy_dist: DummyDist = DummyDist.UNIFORM) -> LabelEstimate:
  """LLG+ (Wainakh et al., PETS 2022): greedy counting with impact and offset from dummies.

  ``g_n = sum_j dW_nj``. One image of class n moves g_n by about ``-m_n`` (its impact,
  estimated as mean_k (1 - p_kn) O_k / K on dummies) and the rest of the batch adds
  an offset ``s_n = mean_k p_kn O_k``. Classes with negative g are taken once; then
  the class with the lowest adjusted ``g - s + (taken) m`` is taken until K labels.
  """
  weight, _ = classifier_grads(update)
  p, big_o, _ = dummy_statistics(key, features_fn=features_fn, variables=variables,
                                 image_shape=image_shape,
                                 num_dummies=num_dummies or num_images, dummy_dist=dummy_dist)
  g = weight.sum(axis=1)
  impact = jnp.mean((1.0 - p) * big_o[:, None], axis=0) / num_images
  offset = jnp.mean(p * big_o[:, None], axis=0)
  # Every class with a negative g once (at most K of them, the most negative).
  counts0 = (g < 0).astype(jnp.int32)
  counts0 = jnp.where(counts0.sum() > num_images,
                      jnp.zeros_like(counts0).at[jnp.argsort(g)[:num_images]].set(1), counts0)
  adjusted = g - offset + counts0 * impact

  def take(i, carry):
    counts, adj = carry
    n = jnp.argmin(adj)
    keep = i >= counts0.sum()
    return (counts.at[n].add(keep.astype(jnp.int32)),
            adj.at[n].add(jnp.where(keep, impact[n], 0.0)))

  counts, _ = jax.lax.fori_loop(0, num_images, take, (counts0, adjusted))
  scores = -(g - offset) / jnp.maximum(impact, 1e-12)
  return LabelEstimate(scores, counts)


def ilrg(update: Params, *, variables: Variables, num_images: int) -> LabelEstimate:
  """iLRG (Ma et al., ICLR 2023), as in their code.

  Class-wise mean embeddings ``o_n ~ dW_n / db_n``, their softmax rows
  ``P_n = softmax(W o_n + b)``, then the least-squares solution of
  ``sum_n c_n = K`` and ``sum_j c_j P_jn - c_n = K db_n`` (pseudo-inverse).
  """
  weight, bias = classifier_grads(update)
  if bias is None:
    raise ValueError("ilrg needs a last layer with a bias")
  layer = variables["params"][CLASSIFIER]
  embeddings = class_features(update)
  probs = jax.nn.softmax(embeddings @ layer["kernel"] + layer["bias"])  # [N(class j), N]
  n = bias.shape[0]
  coef = jnp.concatenate([jnp.ones((1, n)), probs.T - jnp.eye(n)], axis=0)
  rhs = jnp.concatenate([jnp.array([num_images], jnp.float32), num_images * bias])
  scores = jnp.linalg.pinv(coef) @ rhs
  return _estimate(scores, num_images)


#: `cluster` sums its cross-class terms over the ``CLUSTER_ROWS_PER_IMAGE * K`` classes with
#: the largest counts: every class of more than 1/20 of an image is among them.
CLUSTER_ROWS_PER_IMAGE = 20


def cluster(update: Params, *, variables: Variables, num_images: int,
            feature_domain: FeatureDomain = FeatureDomain.NONNEGATIVE,
            iterations: int = 500, damping: float = 0.5,
            rows: int | None = None) -> LabelEstimate:
  """Self-consistent class clusters: iLRG's model with its cross-class terms (ours).

  Model: the c_j images of class j share one feature vector o_j, so
  ``K db_n = sum_j c_j P_jn - c_n`` and ``K dW_n = sum_j c_j P_jn o_j - c_n o_n`` with
  ``P_j = softmax(W o_j + b)``. iLRG (Ma et al., ICLR 2023) reads
  ``o_n ~ dW_n / db_n``, neglecting the mass ``sum_{j != n} c_j P_jn`` that other
  classes put on class n, which is large when K is comparable to N or larger. Here
  the two equations are iterated from iLRG's solution (damped fixed point):
  ``o_n <- (sum_j c_j P_jn o_j - K dW_n) / c_n`` and ``c <- P^T c - K db``.
  A joint least-squares fit of the same equations is not identified (it drifts to
  other count vectors that fit as well); the iteration stays near iLRG's start.

  The sums over j run over the ``rows`` classes of largest current count (default
  ``min(N, CLUSTER_ROWS_PER_IMAGE * K)``), chosen again at every iteration: the counts sum
  to K, so a class left out holds at most K / rows images, with the default 0.05, the count
  below which its features are not updated either. That makes an iteration O(rows N F)
  instead of O(N^2 F), which on a 1000-class head (ImageNet) was most of `select`'s time;
  where rows >= N nothing is left out (the same program as with every class).

  Args:
    update: the shared gradient (its last layer: ``dW`` ``[N, F]`` and ``db`` ``[N]``).
    variables: the victim's (its last layer: W, b).
    num_images: K.
    feature_domain: range the features are clipped to.
    iterations: damped fixed-point iterations.
    damping: weight of the new iterate.
    rows: classes in the cross-class sums (None: the default above).

  Returns:
    A `LabelEstimate`.
  """
  weight, bias = classifier_grads(update)
  if bias is None:
    raise ValueError("cluster needs a last layer with a bias")
  layer = variables["params"][CLASSIFIER]
  kernel, offset = layer["kernel"].T, layer["bias"]
  num_classes = bias.shape[0]
  if rows is not None and rows < 1:
    raise ValueError(f"rows must be positive, got {rows}")
  rows = min(num_classes, CLUSTER_ROWS_PER_IMAGE * num_images if rows is None else rows)
  k_dw, k_db = num_images * weight, num_images * bias
  counts = jnp.maximum(ilrg(update, variables=variables, num_images=num_images).scores, 0.0)
  features = k_dw / jnp.where(jnp.abs(k_db) > 1e-30, k_db, -1e-30)[:, None]
  lower, upper = _DOMAIN_RANGE[FeatureDomain(feature_domain)]
  features = jnp.clip(features, lower, upper)

  def body(carry, _):
    features, counts = carry
    if rows < num_classes:  # static: the classes of largest count
      top = jax.lax.top_k(counts, rows)[1]
      row_features, row_counts = features[top], counts[top]
    else:
      row_features, row_counts = features, counts
    probs = jax.nn.softmax(row_features @ kernel.T + offset)        # [class j, n]
    mass = (row_counts[:, None] * probs).T @ row_features             # sum_j c_j P_jn o_j
    new_features = jnp.clip((mass - k_dw) / jnp.maximum(counts, 1e-3)[:, None], lower, upper)
    new_features = jnp.where((counts > 0.05)[:, None], new_features, features)
    new_counts = jnp.maximum(probs.T @ row_counts - k_db, 0.0)
    new_counts = new_counts * num_images / jnp.maximum(new_counts.sum(), 1e-12)
    mix = lambda new, old: damping * new + (1.0 - damping) * old
    return (mix(new_features, features), mix(new_counts, counts)), None

  (_, counts), _ = jax.lax.scan(body, (features, counts), None, length=iterations)
  return _estimate(counts, num_images)


def certain_classes(update: Params, num_images: int,
                    feature_domain: FeatureDomain = FeatureDomain.NONNEGATIVE) -> jax.Array:
  """`counts.present_classes` as int ``[N]``: zeros where nothing is certain, or if more
  than K classes were flagged, which no update of K images can do."""
  present = present_classes(update, nonnegative_features=FeatureDomain(feature_domain) in (
      FeatureDomain.NONNEGATIVE, FeatureDomain.UNIT))
  if present is None:
    weight, _ = classifier_grads(update)
    return jnp.zeros(weight.shape[:1], jnp.int32)
  present = present.astype(jnp.int32)
  return jnp.where(jnp.sum(present) <= num_images, present, 0)
