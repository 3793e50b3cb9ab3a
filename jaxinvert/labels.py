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
are K of them the answer is exactly those K classes (`with_present`, ours); on heads of
more than two classes a single flagged class is read as a one-class batch (a rule of
thumb), unless every closed form sits on integers against it (`one_class_overruled`).

`Method.FIT` (ours) goes further where 2K <= N: it fits every image's logit vector to
the last layer's gradient for candidate count vectors and keeps the one that fits
exactly (`jaxinvert.label_fit`), which holds on trained victims too.

The closed-form estimators (Geng et al.'s, the baselines, ours) live in
`jaxinvert.label_estimators`, the rules that combine them (`select`, `with_present`) in
`jaxinvert.label_rules`, their dummy images in `jaxinvert.label_dummies`; all three are
re-exported here. This module dispatches among them (`restore`) and reads FedAvg updates
(`restore_fedavg`).
They share one interface: ``(key, *, update, ...) -> LabelEstimate``, where
``update`` is a FedSGD gradient tree (or `fedavg_gradient` of a FedAvg weight change)
and ``scores`` are real-valued counts from which `round_counts` and `hypotheses`
derive integer count vectors. All are jit- and vmap-able over trials (K, N, the
number of dummies and the method are static).
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinvert import label_fit
from jaxinvert.counts import (check_update, class_features, classifier_grads,  # re-exported
                               fractional_distance, hypotheses, integrality_residual,
                               present_classes, round_counts)
from jaxinvert.label_dummies import (DummyDist, FeaturesFn, dummy_images,  # re-exported
                                     dummy_statistics, jittered_images, smooth_images)
from jaxinvert.label_estimators import (OUR_DUMMIES, FeatureDomain,  # re-exported
                                        LabelEstimate, certain_classes, cluster, geng,
                                        geng_bias, gradinversion, idlg, ilrg, llg_plus,
                                        recentred)
from jaxinvert.label_rules import (INTEGRAL_TOLERANCE, UNCONFIDENT,  # re-exported
                                   agrees, confidence, is_integral, one_class_overruled,
                                   one_class_rule_applies, recentred_takes_over, select,
                                   with_present)
from jaxinvert.label_fit import FitSpace  # re-exported
from jaxinvert.types import Params, Variables


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
  RECENTRED = "recentred"          # ours: bias form, dummies re-centred on absent classes' rows
  SELECT = "select"                # ours: of recentred / ilrg / cluster, the most integral
                                   # if integral, else their median
  FIT = "fit"                      # ours: select's candidates certified by a per-image logit fit


#: The method the experiment scripts use for B > 1, chosen on the label grids of
#: docs/labels.md: where 2K > N (labels_grid.py) FIT is SELECT, the most exact on LeNet,
#: ConvNet and ResNet-18 alike; where 2K <= N (labels_small.py) FIT was exact at least as
#: often as SELECT in every cell, untrained and trained.
DEFAULT_METHOD = Method.FIT


#: `Method.FIT`'s default bound on the unknowns of its dense per-image logit fit: K N for
#: the polish over all logits, K^2 for the subspace stage, which alone fits wide heads.
FIT_MAX_UNKNOWNS = 1024

#: `restore`'s FIT also fits every count vector on the sign rule's classes where K images
#: fit on them in at most this many ways (`counts.support_size`: K <= 10, 126 vectors at
#: most; 6435 at K = 16 would cost more than the rest of the search). See docs/labels.md.
FIT_SUPPORT_LIMIT = 128


def restore(key: jax.Array, *, method: Method, update: Params, features_fn: FeaturesFn,
            variables: Variables, num_images: int, image_shape,
            num_dummies: int | None = None, dummy_dist: DummyDist | None = None,
            feature_domain: FeatureDomain = FeatureDomain.NONNEGATIVE,
            fit_max_unknowns: int = FIT_MAX_UNKNOWNS, fit_tolerance: float = 1e-6,
            fit_space: label_fit.FitSpace = label_fit.FitSpace.SUBSPACE,
            fit_beyond_half: bool = False, fit_margin: float | None = None,
            fit_support_limit: int = FIT_SUPPORT_LIMIT,
            select_from: Sequence[Method] | None = None) -> LabelEstimate:
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
    dummy_dist: their distribution, for every estimator involved; None (default): each
      estimator's own (`default_dummies`): U(0, 1) for the published forms (GENG,
      GENG_BIAS, LLG_PLUS, as their code), `OUR_DUMMIES` for RECENTRED, also inside
      SELECT / FIT (where GENG_BIAS, its stand-in, keeps U(0, 1)).
    feature_domain: range of the classifier's input features (`Method.CLUSTER`, and the
      sign rule of SELECT / FIT: `certain_classes`).
    fit_max_unknowns: `Method.FIT` fits per-image logits where 2 K <= N (and K < N with
      ``fit_beyond_half``), with a dense solve per iteration of at most this many
      unknowns: the subspace stage (K^2) and a polish over all K N logits where K N is
      at most this; the subspace fit alone where only K^2 is (wide heads, e.g. N = 1000,
      `FitSpace.SUBSPACE` only); elsewhere it returns SELECT. On XLA:CPU (jax 0.10.2)
      overlapping LAPACK calls deadlocked that wide-head program; FIT's programs order
      them (`label_fit.after`; docs/labels.md, "Wide heads").
    fit_tolerance: `Method.FIT` keeps SELECT's answer when no candidate fits the update
      to this relative squared residual.
    fit_space: where `Method.FIT` fits each candidate's logits (`label_fit.FitSpace`;
      SUBSPACE, the default, was the more exact in docs/labels.md's measurements).
    fit_beyond_half: `Method.FIT` fits where N / 2 < K < N too (opt-in: the N^2 + N
      equations still outnumber the K N logits, but by less; more exact on trained
      victims, and 30-95 s a batch on a 2-core CPU; docs/labels.md, "Beyond N / 2").
      Where K >= N the update's row space is not K-dimensional and FIT is SELECT.
    fit_margin: None (default), or a number >= 1: FIT also needs every other count
      vector to fit at least this many times worse than its best (as `restore_fedavg`,
      whose `FEDAVG_FIT_MARGIN` is 10; stricter, docs/labels.md).
    fit_support_limit: FIT also tries every count vector on the sign rule's classes
      where there are at most this many (`label_fit.search`'s ``support_limit``; the
      default covers K <= 10; 0: off).
    select_from: the estimators SELECT / FIT combine (default `SELECT_FROM`, on a
      FedAvg update too).

  Returns:
    A `LabelEstimate`.
  """
  check_update(update, variables, num_images)
  method = Method(method)
  if fit_margin is not None and not fit_margin >= 1.0:
    raise ValueError(f"fit_margin must be None or at least 1, got {fit_margin}")
  if fit_support_limit < 0:
    raise ValueError(f"fit_support_limit must be >= 0 (0: off), got {fit_support_limit}")
  select_from = _closed_forms(SELECT_FROM if select_from is None else select_from)
  if dummy_dist is not None:
    dummy_dist = DummyDist(dummy_dist)
  elif method not in (Method.SELECT, Method.FIT):  # these hand None on to each estimator
    dummy_dist = default_dummies(method)
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
  if method == Method.RECENTRED:
    return recentred(key, feature_domain=feature_domain, **common)
  if method == Method.CLUSTER:
    return cluster(update, variables=variables, num_images=num_images,
                   feature_domain=feature_domain)
  if method in (Method.SELECT, Method.FIT):
    chosen, fit_inputs = _select(key, select_from=select_from, feature_domain=feature_domain,
                                 **common)
    iterations = _fit_iterations(num_images, chosen.scores.shape[0], fit_max_unknowns,
                                 fit_space, beyond_half=fit_beyond_half)
    if method == Method.SELECT or iterations is None:
      return chosen
    scores, counts, residual, runner_up = _fit(fit_inputs, update=update,
                                               variables=variables, num_images=num_images,
                                               fit_space=fit_space, iterations=iterations,
                                               support_limit=fit_support_limit)
    certified = (residual <= fit_tolerance) & ~fit_inputs.decided
    if fit_margin is not None:
      certified &= runner_up >= fit_margin * residual
    return LabelEstimate(jnp.where(certified, scores, chosen.scores),
                         jnp.where(certified, counts, chosen.counts))
  raise ValueError(f"unknown label method {method!r}")


def default_dummies(method: Method | str) -> DummyDist:
  """The dummy inputs `restore` gives ``method`` when ``dummy_dist`` is None: `OUR_DUMMIES`
  for RECENTRED, U(0, 1) for the published estimators, as their authors' code. SELECT
  and FIT have none of their own: each estimator they combine takes its own."""
  method = Method(method)
  if method in (Method.SELECT, Method.FIT):
    raise ValueError(f"{method.value} combines estimators that each take their own dummies")
  return OUR_DUMMIES if method == Method.RECENTRED else DummyDist.UNIFORM


def _fit_iterations(num_images: int, num_classes: int, max_unknowns: int,
                    space: label_fit.FitSpace, *, beyond_half: bool = False) -> int | None:
  """FIT's polish iterations over all K N logits, 0 for the subspace fit alone, or None
  where FIT hands over to SELECT (`restore`'s ``fit_max_unknowns``, ``fit_beyond_half``)."""
  if 2 * num_images > num_classes and not (beyond_half and num_images < num_classes):
    return None
  if num_images * num_classes <= max_unknowns:
    return label_fit.POLISH_ITERATIONS
  if label_fit.FitSpace(space) == label_fit.FitSpace.SUBSPACE and num_images ** 2 <= max_unknowns:
    return 0
  return None


def _closed_forms(select_from: Sequence[Method | str]) -> tuple[Method, ...]:
  """``select_from`` as Methods; ValueError unless it names closed-form estimators only."""
  methods = tuple(Method(m) for m in select_from)
  if not methods or any(m in (Method.SELECT, Method.FIT) for m in methods):
    raise ValueError(f"select_from must name closed-form estimators, got {methods}")
  return methods


class _FitInputs(NamedTuple):
  key: jax.Array
  sources: jax.Array   # [M, N] candidate scores
  present: jax.Array   # [N] bool, the sign rule's classes
  decided: jax.Array   # the sign rule alone fixes the counts
  one_class: jax.Array | bool  # the one-flagged-class rule applies (`with_present`)


def _select(key: jax.Array, *, update: Params, features_fn: FeaturesFn, variables: Variables,
            num_images: int, image_shape, num_dummies: int | None,
            dummy_dist: DummyDist | None, feature_domain: FeatureDomain,
            select_from: Sequence[Method]
            ) -> tuple[LabelEstimate, _FitInputs]:
  """SELECT's estimate, and what FIT searches from (its candidates' sources)."""
  num_classes = classifier_grads(update)[0].shape[0]
  if num_classes <= 3:
    # ILRG and CLUSTER read each class's features from its own row as dW_n / db_n. The
    # rows sum to zero: with two classes both get the same features, with three only two
    # rows are independent, and leaving the two out raised SELECT's exact batches on
    # such heads (docs/labels.md, "Small heads" and "Heads of 3 and 4 classes").
    select_from = tuple(m for m in select_from
                        if m not in (Method.ILRG, Method.CLUSTER)) or select_from
  keys = jax.random.split(key, len(select_from) + 1)
  common = dict(update=update, features_fn=features_fn, variables=variables,
                num_images=num_images, image_shape=image_shape, num_dummies=num_dummies,
                dummy_dist=dummy_dist)
  base = []  # each waits for those before (ILRG and CLUSTER solve with an SVD; `after`)
  for k, m in zip(keys, select_from):
    waited = {**common, "update": label_fit.classifier_after(update, *[e.scores for e in base])}
    base.append(restore(k, method=m, feature_domain=feature_domain, **waited))
  # RECENTRED takes part only where it sits on integers, else geng_bias (its own U(0, 1)
  # dummies unless ``dummy_dist`` is given) stands in (ours; docs/labels.md).
  raw = list(base)
  plain = []
  for i, m in enumerate(select_from):
    if m == Method.RECENTRED:
      plain.append(geng_bias(keys[i], **{**common, "dummy_dist": (
          default_dummies(Method.GENG_BIAS) if dummy_dist is None else dummy_dist)}))
      integral = fractional_distance(base[i].scores, num_images) <= INTEGRAL_TOLERANCE
      base[i] = LabelEstimate(jnp.where(integral, base[i].scores, plain[-1].scores),
                              jnp.where(integral, base[i].counts, plain[-1].counts))
  present = certain_classes(update, num_images, feature_domain)
  # The one-flagged-class rule, unless every estimate sits on integers against it
  # (`one_class_overruled`; docs/labels.md, "Heads of 3 and 4 classes").
  one_class = one_class_rule_applies(num_classes) and ~one_class_overruled(
      raw + plain, present, num_images)
  chosen = with_present(select(base, num_images).scores, present, num_images,
                        one_class=one_class)
  if Method.RECENTRED in select_from:
    # Where SELECT falls back on the median, RECENTRED's own answer if the rule says so.
    i = select_from.index(Method.RECENTRED)
    rounded = [with_present(e.scores, present, num_images, one_class=one_class)
               for e in raw + plain]
    probs = dummy_statistics(keys[i], features_fn=features_fn, variables=variables,
                             image_shape=image_shape, num_dummies=num_dummies or num_images,
                             dummy_dist=default_dummies(Method.RECENTRED)
                             if dummy_dist is None else dummy_dist)[0]  # RECENTRED's own
    take = recentred_takes_over(rounded[i], rounded[:i] + rounded[i + 1:], base, probs,
                                num_images)
    chosen = LabelEstimate(jnp.where(take, rounded[i].scores, chosen.scores),
                           jnp.where(take, rounded[i].counts, chosen.counts))
  # geng_bias stays a source (FIT's before RECENTRED replaced it).
  sources = jnp.stack([e.scores for e in base] + [e.scores for e in plain]
                      + [idlg(update, num_images=num_images).scores, chosen.scores])
  decided = (jnp.sum(present) == num_images) | ((jnp.sum(present) == 1) & one_class)
  return chosen, _FitInputs(keys[-1], sources, present, decided, one_class)


def _fit(inputs: _FitInputs, *, update: Params, variables: Variables, num_images: int,
         fit_space: label_fit.FitSpace, iterations: int, support_limit: int = 0
         ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """`label_fit.search` from SELECT's sources; skipped where the sign rule has decided."""
  num_classes, dtype = inputs.sources.shape[-1], inputs.sources.dtype

  def search(_):
    scores, counts, residual, runner_up = label_fit.search(
        inputs.key, base_scores=inputs.sources, update=update, variables=variables,
        num_images=num_images, minimum=inputs.present, space=label_fit.FitSpace(fit_space),
        iterations=iterations, support_limit=support_limit)
    return scores.astype(dtype), counts, residual.astype(dtype), runner_up.astype(dtype)

  # The sign rule has decided (K classes flagged, or one): skip the search. Under vmap
  # with a batched predicate `lax.cond` runs both branches and selects, same values.
  # Both branches in the sources' dtype (float64 under jax_enable_x64 with f64 weights).
  skipped = lambda _: (jnp.zeros(num_classes, dtype), jnp.zeros(num_classes, jnp.int32),
                       jnp.full((), jnp.inf, dtype), jnp.full((), jnp.inf, dtype))
  return jax.lax.cond(inputs.decided, skipped, search, None)


#: The estimators SELECT chooses among, on a FedSGD gradient and (`restore_fedavg`) on a
#: FedAvg update. RECENTRED replaced GENG_BIAS, which stands in for it where it is not
#: integral (`restore`), on the held-in cells of experiments/configs/labels_select.py;
#: on FedAvg updates since 2026-12-07 (docs/labels.md, "FedAvg on small heads").
SELECT_FROM = (Method.RECENTRED, Method.ILRG, Method.CLUSTER)

#: `restore_fedavg`'s FIT keeps its best fit only when every other count vector fits at
#: least this many times worse (relative squared residual). Chosen on labels_fedavg.py's
#: seed 0, between the runners-up of exact fits (12x and more) and those of ambiguous ones
#: (1.5x and less), and held out on seed 1 (docs/labels.md).
FEDAVG_FIT_MARGIN = 10.0


#: How many times as far as the dummies' the batch's own softmax mass moves along a FedAvg
#: update (`restore_fedavg`'s ``speedup`` for SELECT, FIT and RECENTRED). The client's
#: steps move each image's logits towards its own label through its own kernel term (the
#: diagonal of the neural tangent kernel, Jacot et al., NeurIPS 2018), which dummy inputs
#: lack. Chosen on RECENTRED alone (labels_fedavg_heads.py, seed 0) and held out on other
#: seeds, heads and victims: docs/labels.md, "Trajectory speed-up", has the figures.
FEDAVG_SPEEDUP = 1.35

#: The methods that `restore_fedavg` speeds up by default (ours); the published forms keep
#: Dimitrov et al.'s plain mean over the trajectory.
_SPED_UP = (Method.SELECT, Method.FIT, Method.RECENTRED)


def _sped_up(per_point: list[jax.Array], speedup: float) -> jax.Array:
  """The mean of per-point scores, moved ``speedup`` times as far from the first point's.

  Each point's scores are ``S(t) - K db`` with the same average bias gradient db, so this
  is ``S(0) + speedup (mean_t S(t) - S(0)) - K db``: the dummies' softmax mass ``S``,
  moved ``speedup`` times as far from theta_0's as the dummies move.
  """
  mean = jnp.mean(jnp.stack(per_point), axis=0)
  return mean if speedup == 1.0 else per_point[0] + speedup * (mean - per_point[0])


def restore_fedavg(key: jax.Array, *, method: Method, start: Variables, end: Variables,
                   features_fn: FeaturesFn, num_images: int, image_shape, local_lr: float,
                   local_steps: int, stats_point: StatsPoint = StatsPoint.TRAJECTORY,
                   trajectory_points: int = 5, speedup: float | None = None,
                   fit_point: float = 0.5, fit_margin: float = FEDAVG_FIT_MARGIN,
                   **kwargs) -> LabelEstimate:
  """Label counts from a FedAvg round: the average gradient -(theta_T - theta_0)/(lr T)
  treated as one FedSGD gradient, statistics at ``stats_point``.

  With `StatsPoint.TRAJECTORY` the estimate is the mean of the estimates at
  ``trajectory_points`` weights evenly interpolated from theta_0 to theta_T (the
  counts formula is linear in the dummy statistics, so this averages them).
  SELECT combines `SELECT_FROM`, as on a gradient, unless ``select_from`` is passed.
  Dummies, unless ``dummy_dist`` is passed: `OUR_DUMMIES` for every estimator SELECT and
  FIT combine (ours; on a gradient their GENG_BIAS stand-in keeps U(0, 1)), each other
  method its own (`default_dummies`).

  ``speedup`` (ours): the client's steps fit its own images, each through its own term of
  the neural tangent kernel, so the batch's softmax mass moves farther along the update
  than the dummies' at the same weights. The estimate is then the first point's plus
  ``speedup`` times the mean's move from it (`FEDAVG_SPEEDUP`, docs/labels.md,
  "Trajectory speed-up"). None = `FEDAVG_SPEEDUP` for SELECT, FIT and RECENTRED on the
  trajectory, 1 (the plain mean, as Dimitrov et al.) for the published forms.

  `Method.FIT` (ours): no count vector fits an average over a moving trajectory exactly,
  so its residual certifies nothing here. Instead FIT fits the candidates at the weights
  ``fit_point`` of the way from theta_0 to theta_T and keeps the best one only when every
  other count vector fits at least ``fit_margin`` times worse; otherwise it answers
  SELECT (trajectory statistics). FIT applies where `restore`'s does (2K <= N and
  ``fit_max_unknowns``) and is SELECT elsewhere (measured on labels_fedavg.py: a clear
  runner-up margin went with exact answers; docs/labels.md). ``fit_support_limit``
  (`restore`'s) is 0 here unless passed: it changed no answer, for up to 2x the time.

  Raises:
    ValueError: ``fit_tolerance`` (FedSGD's certificate; here ``fit_margin`` decides),
      ``fit_point`` outside [0, 1], ``trajectory_points < 1``, ``speedup <= 0``, or a
      ``speedup`` other than 1 off the trajectory (one point: nothing moves).
  """
  if "fit_tolerance" in kwargs:
    raise ValueError("fit_tolerance applies to FedSGD (`restore`); on a FedAvg update no "
                     "count vector fits exactly and FIT uses fit_margin instead")
  if not 0.0 <= fit_point <= 1.0:
    raise ValueError(f"fit_point must be in [0, 1], got {fit_point}")
  method = Method(method)
  if speedup is not None and not speedup > 0:
    raise ValueError(f"speedup must be positive, got {speedup}")
  delta = jax.tree.map(jnp.subtract, end["params"], start["params"])
  gradient = fedavg_gradient(delta, local_lr=local_lr, steps=local_steps)
  if stats_point == StatsPoint.START:
    ts = [0.0]
  elif stats_point == StatsPoint.END:
    ts = [1.0]
  else:
    if trajectory_points < 1:
      raise ValueError(f"trajectory_points must be >= 1, got {trajectory_points}")
    ts = (np.linspace(0.0, 1.0, trajectory_points) if trajectory_points > 1
          else np.array([0.5])).tolist()
  on_trajectory = stats_point == StatsPoint.TRAJECTORY and trajectory_points > 1
  if speedup is None:
    speedup = FEDAVG_SPEEDUP if on_trajectory and method in _SPED_UP else 1.0
  elif speedup != 1.0 and not on_trajectory:
    raise ValueError("speedup scales how far the statistics move along the trajectory: "
                     "it needs stats_point=TRAJECTORY and trajectory_points >= 2")
  fit_kwargs = {k: kwargs.pop(k) for k in ("fit_max_unknowns", "fit_space", "fit_support_limit")
                if k in kwargs}
  # Unless told otherwise, SELECT and FIT give `OUR_DUMMIES` to every estimator they
  # combine, their GENG_BIAS stand-in included (on a gradient it keeps U(0, 1)); the other
  # methods take their own (`default_dummies`; docs/labels.md, "Dummies on FedAvg").
  if kwargs.get("dummy_dist") is None:
    kwargs["dummy_dist"] = (OUR_DUMMIES if method in (Method.SELECT, Method.FIT)
                            else default_dummies(method))
  if method not in (Method.SELECT, Method.FIT):
    per_point = []  # each point waits for those before (ILRG's SVD; `label_fit.after`)
    for t in ts:
      per_point.append(restore(
          key, method=method, update=label_fit.classifier_after(gradient, *per_point),
          features_fn=features_fn, variables=interpolate(start, end, t),
          num_images=num_images, image_shape=image_shape, **kwargs).scores)
    scores = _sped_up(per_point, speedup)
    return LabelEstimate(scores, round_counts(scores, num_images))
  check_update(gradient, start, num_images)
  domain = kwargs.get("feature_domain", FeatureDomain.NONNEGATIVE)
  select_kwargs = dict(features_fn=features_fn, num_images=num_images,
                       image_shape=image_shape, num_dummies=kwargs.pop("num_dummies", None),
                       dummy_dist=kwargs.pop("dummy_dist"),
                       feature_domain=kwargs.pop("feature_domain", domain),
                       select_from=_closed_forms(kwargs.pop("select_from", SELECT_FROM)))
  if kwargs:  # as `restore` would: a misspelt option must not pass silently
    raise TypeError(f"restore_fedavg got unexpected keyword arguments {sorted(kwargs)}")
  # One SELECT per point, each after those before (their SVDs; `label_fit.after`); FIT
  # reuses the one at fit_point when it is on the trajectory.
  selected = {}
  for t in ts:
    waited = label_fit.classifier_after(gradient, *[e.scores for e, _ in selected.values()])
    selected[t] = _select(key, update=waited, variables=interpolate(start, end, t), **select_kwargs)
  scores = _sped_up([estimate.scores for estimate, _ in selected.values()], speedup)
  # The one-class rule where every point's SELECT applied it (none overruled it).
  one_class = jnp.all(jnp.stack([jnp.asarray(inputs.one_class)
                                 for _, inputs in selected.values()]))
  chosen = with_present(scores, certain_classes(gradient, num_images, domain), num_images,
                        one_class=one_class)
  fit_space = fit_kwargs.get("fit_space", label_fit.FitSpace.SUBSPACE)
  iterations = _fit_iterations(num_images, scores.shape[0],
                               fit_kwargs.get("fit_max_unknowns", FIT_MAX_UNKNOWNS), fit_space)
  if method == Method.SELECT or iterations is None:
    return chosen
  middle = interpolate(start, end, fit_point)
  fit_inputs = (selected[fit_point][1] if fit_point in selected
                else _select(key, update=label_fit.classifier_after(gradient, scores),
                             variables=middle, **select_kwargs)[1])
  fitted, counts, residual, runner_up = _fit(
      fit_inputs, update=label_fit.classifier_after(gradient, scores), variables=middle,
      num_images=num_images, fit_space=fit_space, iterations=iterations,
      support_limit=fit_kwargs.get("fit_support_limit", 0))
  trusted = (runner_up >= fit_margin * residual) & ~fit_inputs.decided
  return LabelEstimate(jnp.where(trusted, fitted, chosen.scores),
                       jnp.where(trusted, counts, chosen.counts))
