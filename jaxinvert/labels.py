r"""Zero-shot label restoration: how many images of each class are in the batch.

Notation (Geng et al., arXiv 2110.09074, Sec. 3). A batch of K images, mean
cross-entropy, last layer ``z_k = W o_k + b`` with W ``[N, d]`` (N classes, d
features), ``p_k = softmax(z_k)``, ``y_k`` one-hot, ``c_n = sum_k y_kn`` the counts.
Since dL/dz_kn = (p_kn - y_kn) / K,

  bias:    db_n = (1/K) sum_k (p_kn - y_kn)           = (S_n - c_n) / K
  weight:  dW_n = (1/K) sum_k (p_kn - y_kn) o_k ,  sum_j dW_nj = (1/K) sum_k (p_kn - y_kn) O_k

with ``S_n = sum_k p_kn`` and ``O_k = sum_j o_kj``. Hence, exactly,
``c_n = S_n - K db_n`` (bias form), and, if every O_k equals O,
``c_n = S_n - K sum_j dW_nj / O`` (weight form, Geng et al.'s Eq. 4). Only S_n (and O)
are unknown; Geng et al. estimate them by pushing dummy inputs through the victim.

Since every p_kn > 0, db_n < 0 only for a class in the batch, and with features o >= 0
the same holds for any negative entry of the row dW_n (`counts.present_classes`);
`Method.SELECT` and `Method.FIT` give each such class at least one image, and when there
are K of them the answer is exactly those K classes (`with_present`, ours); a single
flagged class is read as a one-class batch (a rule of thumb that held on every batch
of the benchmarks).

`Method.FIT` (ours) goes further where 2K <= N: it fits every image's logit vector to
the last layer's gradient for candidate count vectors and keeps the one that fits
exactly (`jaxinvert.label_fit`), which holds on trained victims too.

The estimators share one interface: ``(key, *, update, ...) -> LabelEstimate``, where
``update`` is a FedSGD gradient tree (or `fedavg_gradient` of a FedAvg weight change)
and ``scores`` are real-valued counts from which `round_counts` and `hypotheses`
derive integer count vectors. All are jit- and vmap-able over trials (K, N, the
number of dummies and the method are static).
"""

from __future__ import annotations

import enum
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxinvert import label_fit
from jaxinvert.counts import (check_update, class_features, classifier_grads,  # re-exported
                               hypotheses, present_classes, round_counts)
from jaxinvert.types import CLASSIFIER, Params, PyTree, Variables

FeaturesFn = Callable[[Variables, jax.Array], tuple[jax.Array, PyTree]]


class LabelEstimate(NamedTuple):
  """Attributes: ``scores`` real-valued counts ``[N]``; ``counts`` their rounding, int32
  ``[N]``, non-negative and summing to K."""

  scores: jax.Array
  counts: jax.Array


class DummyDist(enum.Enum):
  """Inputs pushed through the victim to estimate the batch's softmax statistics."""

  UNIFORM = "uniform"    # U(0, 1) images, Geng et al.'s code
  GAUSSIAN = "gaussian"  # N(0, 1) images


# ----------------------------------------------------------------- shared pieces


def _dummies(key: jax.Array, num: int, image_shape, dist: DummyDist) -> jax.Array:
  shape = (num, *image_shape)
  if dist == DummyDist.UNIFORM:
    return jax.random.uniform(key, shape, jnp.float32)
  return jax.random.normal(key, shape, jnp.float32)


def dummy_statistics(key: jax.Array, *, features_fn: FeaturesFn, variables: Variables,
                     image_shape, num_dummies: int, dummy_dist: DummyDist
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Softmax and feature statistics of dummy inputs (Geng et al.'s estimates).

  Returns:
    ``(p [M, N], O [M], features [M, d])`` for M = ``num_dummies`` dummy images.
  """
  if num_dummies <= 0:
    raise ValueError(f"num_dummies must be positive, got {num_dummies}")
  x = _dummies(key, num_dummies, image_shape, dummy_dist)
  features, _ = features_fn(variables, x)
  layer = variables["params"][CLASSIFIER]
  logits = features @ layer["kernel"] + layer.get("bias", 0.0)
  return jax.nn.softmax(logits), features.sum(axis=1), features


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


class FeatureDomain(enum.Enum):
  """Range of the classifier's input features (the last activation)."""

  NONNEGATIVE = "nonnegative"  # ReLU, softplus
  UNIT = "unit"                # sigmoid
  REAL = "real"                # no activation


def cluster(update: Params, *, variables: Variables, num_images: int,
            feature_domain: FeatureDomain = FeatureDomain.NONNEGATIVE,
            iterations: int = 500, damping: float = 0.5) -> LabelEstimate:
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
  """
  weight, bias = classifier_grads(update)
  if bias is None:
    raise ValueError("cluster needs a last layer with a bias")
  layer = variables["params"][CLASSIFIER]
  kernel, offset = layer["kernel"].T, layer["bias"]
  k_dw, k_db = num_images * weight, num_images * bias
  counts = jnp.maximum(ilrg(update, variables=variables, num_images=num_images).scores, 0.0)
  features = k_dw / jnp.where(jnp.abs(k_db) > 1e-30, k_db, -1e-30)[:, None]
  lower, upper = {FeatureDomain.NONNEGATIVE: (0.0, jnp.inf), FeatureDomain.UNIT: (0.0, 1.0),
                  FeatureDomain.REAL: (-jnp.inf, jnp.inf)}[feature_domain]
  features = jnp.clip(features, lower, upper)

  def body(carry, _):
    features, counts = carry
    probs = jax.nn.softmax(features @ kernel.T + offset)      # [class j, n]
    mass = (counts[:, None] * probs).T @ features               # sum_j c_j P_jn o_j
    new_features = jnp.clip((mass - k_dw) / jnp.maximum(counts, 1e-3)[:, None], lower, upper)
    new_features = jnp.where((counts > 0.05)[:, None], new_features, features)
    new_counts = jnp.maximum(probs.T @ counts - k_db, 0.0)
    new_counts = new_counts * num_images / jnp.maximum(new_counts.sum(), 1e-12)
    mix = lambda new, old: damping * new + (1.0 - damping) * old
    return (mix(new_features, features), mix(new_counts, counts)), None

  (_, counts), _ = jax.lax.scan(body, (features, counts), None, length=iterations)
  return _estimate(counts, num_images)


# ----------------------------------------------------------------- FedAvg


def fedavg_gradient(delta: Params, *, local_lr: float, steps: int) -> Params:
  """The average gradient implied by a FedAvg weight change: -(theta_T - theta_0) / (lr T)."""
  if local_lr <= 0 or steps <= 0:
    raise ValueError(f"local_lr and steps must be positive, got {local_lr} and {steps}")
  return jax.tree.map(lambda d: -d / (local_lr * steps), delta)


class StatsPoint(enum.Enum):
  """Where along FedAvg's local training the dummy statistics are taken."""

  START = "start"            # theta_0, the weights the server sent
  END = "end"                # theta_T, the weights the client sent back
  TRAJECTORY = "trajectory"  # averaged over weights interpolated between them (Dimitrov et al.)


def interpolate(start: Variables, end: Variables, t: float | jax.Array) -> dict:
  """``start + t (end - start)`` on the parameters; BatchNorm state from ``start``."""
  params = jax.tree.map(lambda a, b: a + t * (b - a), start["params"], end["params"])
  return {**start, "params": params}


# ----------------------------------------------------------------- dispatch


class Method(enum.Enum):
  GENG = "geng"                    # published weight form, dummy p and O
  GENG_BIAS = "geng_bias"          # bias form, dummy p
  IDLG = "idlg"
  GRADINVERSION = "gradinversion"
  LLG_PLUS = "llg_plus"
  ILRG = "ilrg"
  CLUSTER = "cluster"              # ours: iLRG's cluster model fitted self-consistently
  SELECT = "select"                # ours: of geng_bias / ilrg / cluster, the most integral
                                   # if integral, else their median
  FIT = "fit"                      # ours: select's candidates certified by a per-image logit fit


#: The method the experiment scripts use for B > 1. Chosen on the label grids of the
#: README: where 2K > N (experiments/configs/labels_grid.py) FIT is SELECT, which had the
#: most exact count vectors summed over the cells on LeNet, ConvNet and ResNet-18 alike
#: (and, with its median rule, the best label accuracy on i.i.d. batches larger than N);
#: where 2K <= N (labels_small.py) FIT was exact at least as often as SELECT in every
#: cell, untrained and trained.
DEFAULT_METHOD = Method.FIT


def restore(key: jax.Array, *, method: Method, update: Params, features_fn: FeaturesFn,
            variables: Variables, num_images: int, image_shape,
            num_dummies: int | None = None, dummy_dist: DummyDist = DummyDist.UNIFORM,
            feature_domain: FeatureDomain = FeatureDomain.NONNEGATIVE,
            fit_max_unknowns: int = 1024, fit_tolerance: float = 1e-6) -> LabelEstimate:
  """Label counts from a FedSGD gradient (or a FedAvg average gradient) by ``method``.

  Args:
    key: PRNG key for dummy inputs.
    method: the estimator.
    update: gradient tree with the victim's parameter structure.
    features_fn: ``(variables, images) -> (features, state)`` of the victim.
    variables: victim weights at which the gradient was taken.
    num_images: K.
    image_shape: ``(H, W, C)`` of the dummy inputs.
    num_dummies: dummy images (default K).
    dummy_dist: their distribution.
    feature_domain: range of the classifier's input features (`Method.CLUSTER`, and the
      sign rule of SELECT / FIT: `certain_classes`).
    fit_max_unknowns: `Method.FIT` fits per-image logits only where 2 K <= N and K N is
      at most this (a dense ``[KN, KN]`` solve per iteration); elsewhere it returns
      SELECT. (At K = 16, N = 20 wrong count vectors fitted a trained victim's update
      as closely as the true one: README, Labels.)
    fit_tolerance: `Method.FIT` keeps SELECT's answer when no candidate fits the update
      to this relative squared residual.

  Returns:
    A `LabelEstimate`.
  """
  check_update(update, variables, num_images)
  method = Method(method)
  common = dict(update=update, features_fn=features_fn, variables=variables,
                num_images=num_images, image_shape=image_shape, num_dummies=num_dummies,
                dummy_dist=dummy_dist)
  if method == Method.GENG:
    return geng(key, **common)
  if method == Method.GENG_BIAS:
    return geng_bias(key, **common)
  if method == Method.LLG_PLUS:
    return llg_plus(key, **common)
  if method == Method.IDLG:
    return idlg(update, num_images=num_images)
  if method == Method.GRADINVERSION:
    return gradinversion(update, num_images=num_images)
  if method == Method.ILRG:
    return ilrg(update, variables=variables, num_images=num_images)
  if method == Method.CLUSTER:
    return cluster(update, variables=variables, num_images=num_images,
                   feature_domain=feature_domain)
  if method in (Method.SELECT, Method.FIT):
    keys = jax.random.split(key, len(SELECT_FROM) + 1)
    base = [restore(k, method=m, update=update, features_fn=features_fn,
                    variables=variables, num_images=num_images,
                    image_shape=image_shape, num_dummies=num_dummies,
                    dummy_dist=dummy_dist, feature_domain=feature_domain)
            for k, m in zip(keys, SELECT_FROM)]
    present = certain_classes(update, num_images, feature_domain)
    chosen = with_present(select(base, num_images).scores, present, num_images)
    num_classes = chosen.scores.shape[0]
    if (method == Method.SELECT or 2 * num_images > num_classes
        or num_images * num_classes > fit_max_unknowns):
      return chosen
    sources = ([e.scores for e in base] + [idlg(update, num_images=num_images).scores]
               + [chosen.scores])

    def fitted(_):
      scores, counts, residual = label_fit.search(
          keys[-1], base_scores=jnp.stack(sources), update=update, variables=variables,
          num_images=num_images, minimum=present)
      certified = residual <= fit_tolerance
      return (jnp.where(certified, scores, chosen.scores),
              jnp.where(certified, counts, chosen.counts))

    # The sign rule has decided (K classes flagged, or one): skip the search. Under vmap
    # with a batched predicate `lax.cond` runs both branches and selects, same values.
    decided = (jnp.sum(present) == num_images) | (jnp.sum(present) == 1)
    scores, counts = jax.lax.cond(decided, lambda _: (chosen.scores, chosen.counts),
                                  fitted, None)
    return LabelEstimate(scores, counts)
  raise ValueError(f"unknown label method {method!r}")


SELECT_FROM = (Method.GENG_BIAS, Method.ILRG, Method.CLUSTER)


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


def with_present(scores: jax.Array, present: jax.Array, num_images: int, *,
                 one_class: bool = True) -> LabelEstimate:
  """An estimate made consistent with the classes certainly in the batch (ours).

  Each class in ``present`` (`certain_classes`) holds at least one image; when there
  are K of them the batch is exactly one image of each, a certificate that needs no
  statistics of the victim (it generalises iDLG's B=1 sign rule and is what makes
  GradInversion's row minima right on unique labels, without assuming uniqueness).

  With ``one_class``, a single flagged class is read as a batch of K images of that
  class. This is a rule of thumb, not a certificate: an unflagged class m may still
  hold images if the batch's softmax mass on it reaches its count (S_m >= c_m) and,
  with non-negative features, its weight row stays non-negative too. On the README's
  label benchmarks (FedSGD and FedAvg, untrained and trained victims, B up to 128) no
  batch of two or more classes had a single flagged class (`sign_rule` in the output
  of ``experiments/restore_labels.py``), while every closed form, once the victim is
  confident, spreads the counts of a one-class batch over absent classes (README,
  Labels).

  Args:
    scores: real-valued counts ``[N]`` of some estimator.
    present: int ``[N]``, 1 for a class certainly present.
    num_images: K.
    one_class: apply the one-flagged-class rule above.

  Returns:
    A `LabelEstimate` whose counts are at least ``present``; the scores are raised to 1
    on present classes (exactly ``present`` when all K are known, K on the one class
    under ``one_class``), so that hypotheses drawn from them respect it too.
  """
  present = jnp.asarray(present, jnp.int32)
  flagged = jnp.sum(present)
  scores = jnp.where(present > 0, jnp.maximum(scores, 1.0), scores)
  scores = jnp.where(flagged == num_images, present.astype(scores.dtype), scores)
  if one_class:
    scores = jnp.where(flagged == 1, (num_images * present).astype(scores.dtype), scores)
  return LabelEstimate(scores, round_counts(scores, num_images, minimum=present))


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
  look integral by them (ours, the gate of `select`).

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


def select(estimates: Sequence[LabelEstimate], num_images: int, *,
           integral_tolerance: float = 0.15) -> LabelEstimate:
  """The most integral estimate if it is integral enough, else the per-class median (ours).

  The estimate with the smallest `integrality_residual` is taken when its
  `fractional_distance` is at most ``integral_tolerance``: then one estimator's model of
  the victim holds and its scores sit on integers. Otherwise none does, and how close
  scores sit to integers says little about which is right (e.g. `cluster`'s clipped
  zeros look integral in i.i.d. batches larger than N, where its counts are the worst);
  the answer is then the per-class median of the estimates, robust to the one that
  fails worst. The tolerance (0.15, against about 0.25 for scores with uniform
  fractional parts) was chosen on held-in label grids (README, Labels); with
  ``integral_tolerance=inf`` this is the older rule, always the most integral estimate.

  Everything is computed from the update alone, so the choice is zero-shot.

  Args:
    estimates: estimates of the same batch (at least one); one with a non-finite score
      is left out of both the choice and the median.
    num_images: K.
    integral_tolerance: the most integral estimate's largest `fractional_distance`.

  Returns:
    A `LabelEstimate`.
  """
  if not estimates:
    raise ValueError("select needs at least one estimate")
  scores = jnp.stack([e.scores for e in estimates])
  finite = jnp.all(jnp.isfinite(scores), axis=1)  # an estimator that broke down is ignored
  residuals = jnp.stack([integrality_residual(s, num_images) for s in scores])
  best = jnp.argmin(jnp.where(finite, residuals, jnp.inf))
  integral = fractional_distance(scores[best], num_images) <= integral_tolerance
  median = jnp.nan_to_num(jnp.nanmedian(jnp.where(finite[:, None], scores, jnp.nan), axis=0))
  chosen = jnp.where(integral, scores[best], median)
  counts = jnp.where(integral, jnp.stack([e.counts for e in estimates])[best],
                     round_counts(median, num_images))
  return LabelEstimate(chosen, counts)


def restore_fedavg(key: jax.Array, *, method: Method, start: Variables, end: Variables,
                   features_fn: FeaturesFn, num_images: int, image_shape, local_lr: float,
                   local_steps: int, stats_point: StatsPoint = StatsPoint.TRAJECTORY,
                   trajectory_points: int = 5, **kwargs) -> LabelEstimate:
  """Label counts from a FedAvg round: the average gradient -(theta_T - theta_0)/(lr T)
  treated as one FedSGD gradient, statistics at ``stats_point``.

  With `StatsPoint.TRAJECTORY` the estimate is the mean of the estimates at
  ``trajectory_points`` weights evenly interpolated from theta_0 to theta_T (the
  counts formula is linear in the dummy statistics, so this averages them).
  `Method.FIT` runs as `Method.SELECT` here: its fit certifies one gradient taken at
  known weights, which the average over a local trajectory is not (except for a single
  local step).
  """
  if Method(method) == Method.FIT:
    method = Method.SELECT
  delta = jax.tree.map(jnp.subtract, end["params"], start["params"])
  gradient = fedavg_gradient(delta, local_lr=local_lr, steps=local_steps)
  if stats_point == StatsPoint.START:
    points = [start]
  elif stats_point == StatsPoint.END:
    points = [end]
  else:
    if trajectory_points < 1:
      raise ValueError(f"trajectory_points must be >= 1, got {trajectory_points}")
    ts = jnp.linspace(0.0, 1.0, trajectory_points) if trajectory_points > 1 else jnp.array([.5])
    points = [interpolate(start, end, t) for t in ts]
  scores = jnp.mean(jnp.stack([
      restore(key, method=method, update=gradient, features_fn=features_fn, variables=v,
              num_images=num_images, image_shape=image_shape, **kwargs).scores
      for v in points]), axis=0)
  if Method(method) == Method.SELECT:
    domain = kwargs.get("feature_domain", FeatureDomain.NONNEGATIVE)
    return with_present(scores, certain_classes(gradient, num_images, domain), num_images)
  return _estimate(scores, num_images)
