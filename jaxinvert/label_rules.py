r"""Rules that combine closed-form label-count estimates into one answer (ours).

`select` takes the most integral of several estimates (`jaxinvert.label_estimators`) when
one sits on integers, else their per-class median (`is_integral` says which; `agrees`
compares two estimates' counts; `confidence` gauges the victim, and
`recentred_takes_over` says where SELECT answers RECENTRED's counts instead of the
median); `with_present` makes an estimate agree with the classes
the sign rule certifies (`label_estimators.certain_classes`), and reads a single flagged
class of a head of more than two classes as a one-class batch (`one_class_rule_applies`)
unless the estimates overrule it (`one_class_overruled`). All are pure, jit- and
vmap-able over trials; SELECT and FIT in `jaxinvert.labels.restore` are built from them.
Why each rule and its constant: docs/labels.md.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxinvert.counts import fractional_distance, integrality_residual, round_counts
from jaxinvert.label_estimators import LabelEstimate


def one_class_rule_applies(num_classes: int) -> bool:
  """Whether `with_present` reads a single flagged class as a one-class batch by default:
  on heads of more than two classes. The bias gradients sum to zero, so one of them is
  always negative; with N = 2 the other is positive whenever the batch's softmax mass on
  its class reaches its count, which an untrained 2-class victim (about half its mass on
  each class) gives nearly every mixed batch. One flagged class of two then says little
  about the batch: on 2-class victims the rule misread most mixed batches (docs/labels.md,
  "Small heads")."""
  return num_classes > 2


def with_present(scores: jax.Array, present: jax.Array, num_images: int, *,
                 one_class: bool | jax.Array | None = None) -> LabelEstimate:
  """An estimate made consistent with the classes certainly in the batch (ours).

  Each class in ``present`` (`certain_classes`) holds at least one image; when there
  are K of them the batch is exactly one image of each, a certificate that needs no
  statistics of the victim (it generalises iDLG's B=1 sign rule and is what makes
  GradInversion's row minima right on unique labels, without assuming uniqueness).

  With ``one_class``, a single flagged class is read as a batch of K images of that
  class. This is a rule of thumb, not a certificate: an unflagged class m may still
  hold images if the batch's softmax mass on it reaches its count (S_m >= c_m) and,
  with non-negative features, its weight row stays non-negative too. On the 20-class
  label benchmarks of docs/labels.md (FedSGD and FedAvg, untrained and trained victims,
  B up to 128) no batch of two or more classes had a single flagged class (`sign_rule`
  in the output of ``experiments/restore_labels.py``), while every closed form, once the
  victim is confident, spreads the counts of a one-class batch over absent classes. On
  2-class heads it misread most mixed batches, so by default it applies only where
  N > 2 (`one_class_rule_applies`); on 3- and 4-class heads it misread some, and SELECT
  and FIT let the closed forms overrule it (`one_class_overruled`).

  Args:
    scores: real-valued counts ``[N]`` of some estimator.
    present: int ``[N]``, 1 for a class certainly present.
    num_images: K.
    one_class: apply the one-flagged-class rule above (a Python or traced bool, e.g.
      unless `one_class_overruled`); None (default): where `one_class_rule_applies`
      (heads of more than two classes).

  Returns:
    A `LabelEstimate` whose counts are at least ``present``; the scores are raised to 1
    on present classes (exactly ``present`` when all K are known, K on the one class
    under ``one_class``), so that hypotheses drawn from them respect it too.
  """
  present = jnp.asarray(present, jnp.int32)
  if one_class is None:
    one_class = one_class_rule_applies(present.shape[-1])
  flagged = jnp.sum(present)
  scores = jnp.where(present > 0, jnp.maximum(scores, 1.0), scores)
  scores = jnp.where(flagged == num_images, present.astype(scores.dtype), scores)
  if one_class is not False:
    scores = jnp.where(jnp.asarray(one_class) & (flagged == 1),
                       (num_images * present).astype(scores.dtype), scores)
  return LabelEstimate(scores, round_counts(scores, num_images, minimum=present))


#: `select`'s bound on `fractional_distance` for an estimate to count as integral.
INTEGRAL_TOLERANCE = 0.15


def one_class_overruled(estimates: Sequence[LabelEstimate], present: jax.Array,
                        num_images: int, *,
                        integral_tolerance: float = INTEGRAL_TOLERANCE) -> jax.Array:
  """Whether the estimates together overrule the one-flagged-class rule (ours).

  `with_present`'s one-class reading is a rule of thumb; on heads of 3 classes an
  untrained victim puts about K / 3 of its softmax mass on each class, so a class of one
  or two images goes unflagged and a mixed batch can flag a single class. The closed
  forms then still sit on the batch's counts. Their answer stands against the rule when
  every one of them is integral (`fractional_distance` at most ``integral_tolerance``)
  and rounds at least one image onto an unflagged class. On the replayed batches of
  docs/labels.md ("Heads of 3 and 4 classes": five victims, untrained and trained, N = 3
  to 20), with the estimates SELECT passes (`recentred` and `geng_bias` at N=3, iLRG and
  `cluster` too above), that held in 13 of the 42 mixed batches with a single flagged
  class, and in 1 of the 330 one-class batches with a single flagged class: there a
  confident victim's closed forms mostly spread the K images over absent classes in
  fractions, or disagree. The other 29 mixed batches keep the rule and its misreading.

  Args:
    estimates: closed-form estimates of the same batch (raw, before any stand-in); one
      with a non-finite score keeps the rule.
    present: int ``[N]``, the sign rule's classes (`certain_classes`).
    num_images: K.
    integral_tolerance: as `select`.

  Returns:
    A bool scalar: True where the rule should not apply.
  """
  if not estimates:
    raise ValueError("one_class_overruled needs at least one estimate")
  unflagged = jnp.asarray(present) == 0
  votes = []
  for e in estimates:
    onto_unflagged = jnp.sum(jnp.where(unflagged, round_counts(e.scores, num_images), 0)) >= 1
    votes.append(jnp.all(jnp.isfinite(e.scores)) & onto_unflagged
                 & (fractional_distance(e.scores, num_images) <= integral_tolerance))
  return jnp.all(jnp.stack(votes))


def agrees(candidate: LabelEstimate, others: Sequence[LabelEstimate]) -> jax.Array:
  """Whether ``candidate``'s counts equal those of at least one of ``others``.

  Args:
    candidate: an estimate.
    others: estimates of the same batch.

  Returns:
    A bool scalar.
  """
  return jnp.any(jnp.stack([jnp.all(candidate.counts == o.counts) for o in others]))


#: `confidence` below which SELECT trusts RECENTRED's own counts where it falls back on
#: the median (`jaxinvert.labels`; docs/labels.md, "Unconfident victims"). On jittered
#: dummies the untrained ConvNet and ResNet-18 measured 0.10-0.55, the untrained LeNet
#: 0.25-1.00 (its sigmoid features saturate at some inits), trained victims 0.66-0.97.
UNCONFIDENT = 0.5


def confidence(probs: jax.Array) -> jax.Array:
  """How confident a victim is on some inputs: their mean top softmax probability,
  rescaled so that chance (1/N) is 0 and certainty 1 (ours).

  RECENTRED's premise, that the batch's mean feature is all its dummies miss, holds while
  the victim's softmax barely varies with the input (untrained) and fails once it is
  confident (docs/labels.md); this gauges which, from dummy inputs alone.

  Args:
    probs: ``[M, N]`` softmax outputs, N >= 2.

  Returns:
    A float scalar, 0 to 1.
  """
  num_classes = probs.shape[-1]
  if num_classes < 2:
    raise ValueError(f"confidence needs at least 2 classes, got {num_classes}")
  chance = 1.0 / num_classes
  return (jnp.mean(jnp.max(probs, axis=-1)) - chance) / (1.0 - chance)


def recentred_takes_over(recentred: LabelEstimate, others: Sequence[LabelEstimate],
                         estimates: Sequence[LabelEstimate], probs: jax.Array,
                         num_images: int, *, unconfident: float | None = None
                         ) -> jax.Array:
  """Whether SELECT answers RECENTRED's own counts (ours): only where it falls back on the
  median (no estimate integral, `is_integral`), and there

  - where another estimator rounds to the same counts (`agrees`; docs/labels.md, "Heads
    of 3 and 4 classes": on untrained small heads RECENTRED is the most exact of them
    even off integers);
  - or where the victim is unconfident on RECENTRED's dummies (`confidence` below
    ``unconfident``; docs/labels.md, "Unconfident victims"), except on 3-class heads,
    where RECENTRED alone was the less exact.

  Args:
    recentred: RECENTRED's estimate, rounded as SELECT's answer would be.
    others: the other estimators', rounded the same way.
    estimates: those SELECT chose among (`select`'s).
    probs: ``[M, N]`` the victim's softmax on RECENTRED's dummies.
    num_images: K.
    unconfident: the `confidence` threshold; None = `UNCONFIDENT`.

  Returns:
    A bool scalar.
  """
  unconfident = UNCONFIDENT if unconfident is None else unconfident
  unsure = (confidence(probs) < unconfident) & (probs.shape[-1] != 3)
  return ~is_integral(estimates, num_images) & (agrees(recentred, others) | unsure)


def is_integral(estimates: Sequence[LabelEstimate], num_images: int, *,
                integral_tolerance: float = INTEGRAL_TOLERANCE) -> jax.Array:
  """Whether `select` takes an estimate (its most integral one) rather than the median.

  Args:
    estimates: as `select`.
    num_images: K.
    integral_tolerance: as `select`.

  Returns:
    A bool scalar.
  """
  return _most_integral(jnp.stack([e.scores for e in estimates]), num_images,
                        integral_tolerance)[1]


def _most_integral(scores: jax.Array, num_images: int, integral_tolerance: float
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(index of the most integral finite estimate, whether it is integral, finite mask)."""
  finite = jnp.all(jnp.isfinite(scores), axis=1)  # an estimator that broke down is ignored
  residuals = jnp.stack([integrality_residual(s, num_images) for s in scores])
  best = jnp.argmin(jnp.where(finite, residuals, jnp.inf))
  integral = fractional_distance(scores[best], num_images) <= integral_tolerance
  return best, integral, finite


def select(estimates: Sequence[LabelEstimate], num_images: int, *,
           integral_tolerance: float = INTEGRAL_TOLERANCE) -> LabelEstimate:
  """The most integral estimate if it is integral enough, else the per-class median (ours).

  The estimate with the smallest `integrality_residual` is taken when its
  `fractional_distance` is at most ``integral_tolerance``: then one estimator's model of
  the victim holds and its scores sit on integers. Otherwise none does, and how close
  scores sit to integers says little about which is right (e.g. `cluster`'s clipped
  zeros look integral in i.i.d. batches larger than N, where its counts are the worst);
  the answer is then the per-class median of the estimates, robust to the one that
  fails worst. The tolerance (0.15, against about 0.25 for scores with uniform
  fractional parts) was chosen on held-in label grids (docs/labels.md); with
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
  best, integral, finite = _most_integral(scores, num_images, integral_tolerance)
  median = jnp.nan_to_num(jnp.nanmedian(jnp.where(finite[:, None], scores, jnp.nan), axis=0))
  chosen = jnp.where(integral, scores[best], median)
  counts = jnp.where(integral, jnp.stack([e.counts for e in estimates])[best],
                     round_counts(median, num_images))
  return LabelEstimate(chosen, counts)
