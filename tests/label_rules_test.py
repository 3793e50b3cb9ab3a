"""The rules that combine label estimates (jaxinvert.label_rules): with_present, select, and
the one-class overrule and agreement tests SELECT applies."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import counts, label_estimators, label_rules


def test_with_present_certifies_k_classes_and_floors_fewer():
  estimate = jnp.array([3.0, 0.2, 0.4, 0.3, 0.1])
  present = jnp.array([0, 1, 1, 1, 0])
  certified = label_rules.with_present(estimate, present, 3)
  np.testing.assert_array_equal(certified.counts, [0, 1, 1, 1, 0])
  np.testing.assert_array_equal(certified.scores, [0, 1, 1, 1, 0])
  floored = label_rules.with_present(estimate, present, 5)
  np.testing.assert_array_equal(floored.counts, [2, 1, 1, 1, 0])
  np.testing.assert_array_equal(label_estimators.certain_classes(
      {"classifier": {"kernel": jnp.zeros((2, 3)), "bias": jnp.array([-1.0, -1.0, 2.0])}},
      num_images=1), [0, 0, 0])  # two flagged classes cannot come from one image


def test_with_present_reads_one_flagged_class_as_a_one_class_batch():
  estimate = jnp.array([2.0, 0.9, 1.4, 0.8, 0.9])  # a closed form smeared over absent classes
  present = jnp.array([1, 0, 0, 0, 0])
  np.testing.assert_array_equal(label_rules.with_present(estimate, present, 6).counts,
                                [6, 0, 0, 0, 0])
  floored = label_rules.with_present(estimate, present, 6, one_class=False)
  np.testing.assert_array_equal(floored.counts, [2, 1, 1, 1, 1])


def test_select_picks_the_most_integral_estimate():
  near = label_estimators.LabelEstimate(jnp.array([1.96, 0.03, 1.01]), jnp.array([2, 0, 1]))
  far = label_estimators.LabelEstimate(jnp.array([1.4, 0.9, 0.7]), jnp.array([1, 1, 1]))
  assert float(counts.integrality_residual(near.scores, 3)) == pytest.approx(0.08, abs=1e-5)
  for order in ([near, far], [far, near]):
    chosen = label_rules.select(order, 3)
    np.testing.assert_array_equal(chosen.counts, [2, 0, 1])
    np.testing.assert_allclose(chosen.scores, near.scores)


def test_select_takes_the_median_when_no_estimate_is_integral():
  estimate = lambda s: _estimate(s, 6)
  # Fractional distances 0.2, 0.4, 0.4: the most integral one is not integral enough.
  order = [estimate([3.3, 0.7, 2.0]), estimate([2.4, 2.4, 1.2]), estimate([1.6, 1.7, 2.7])]
  chosen = label_rules.select(order, 6)
  np.testing.assert_allclose(chosen.scores, [2.4, 1.7, 2.0], rtol=1e-6)
  np.testing.assert_array_equal(chosen.counts, [2, 2, 2])
  # With an unbounded tolerance the most integral estimate is taken, as before.
  old = label_rules.select(order, 6, integral_tolerance=float("inf"))
  np.testing.assert_array_equal(old.counts, [3, 1, 2])
  with pytest.raises(ValueError, match="at least one estimate"):
    label_rules.select([], 6)
  # An estimator that broke down (NaN) is neither chosen nor part of the median.
  broken = label_estimators.LabelEstimate(jnp.array([jnp.nan, 0.0, 0.0]), jnp.array([6, 0, 0]))
  chosen = label_rules.select([broken] + order[1:], 6)
  np.testing.assert_allclose(chosen.scores, [2.0, 2.05, 1.95], rtol=1e-6)
  exact = label_rules.select([broken, estimate([3.0, 1.0, 2.0])], 6)
  np.testing.assert_array_equal(exact.counts, [3, 1, 2])


def _estimate(scores, k):
  scores = jnp.asarray(scores, jnp.float32)
  return label_estimators.LabelEstimate(scores, counts.round_counts(scores, k))


def test_integral_estimates_against_the_one_class_rule_overrule_it():
  present = jnp.array([1, 0, 0])  # one flagged class, K = 4
  agreeing = [_estimate([2.02, 0.97, 1.01], 4), _estimate([1.95, 1.05, 1.0], 4)]
  assert bool(label_rules.one_class_overruled(agreeing, present, 4))
  # One estimate off integers, or one that keeps every image on the flagged class,
  # or one that broke down: the rule stands.
  for third in ([2.4, 0.6, 1.0], [3.98, 0.01, 0.01], [jnp.nan, 1.0, 1.0]):
    assert not bool(label_rules.one_class_overruled(agreeing + [_estimate(third, 4)],
                                                    present, 4))
  # A confident victim's closed form spreads a one-class batch over absent classes in
  # fractions that round to zero: integral on the flagged class, yet no overrule.
  smeared = _estimate([3.9, 0.05, 0.05], 4)
  assert float(counts.fractional_distance(smeared.scores, 4)) <= 0.15
  assert not bool(label_rules.one_class_overruled([smeared] * 3, present, 4))
  with pytest.raises(ValueError, match="at least one estimate"):
    label_rules.one_class_overruled([], present, 4)
  # with_present takes the decision as a traced bool.
  overruled = label_rules.one_class_overruled(agreeing, present, 4)
  np.testing.assert_array_equal(
      label_rules.with_present(agreeing[0].scores, present, 4, one_class=~overruled).counts,
      [2, 1, 1])
  np.testing.assert_array_equal(
      label_rules.with_present(agreeing[0].scores, present, 4, one_class=jnp.array(True)).counts,
      [4, 0, 0])


def test_agrees_and_is_integral_match_select():
  a, b, c = _estimate([2.4, 2.4, 1.2], 6), _estimate([1.6, 1.7, 2.7], 6), _estimate(
      [1.4, 2.2, 2.6], 6)
  assert bool(label_rules.agrees(c, [a, b]))   # c rounds to [1, 2, 3], as b does
  assert not bool(label_rules.agrees(a, [b]))  # [3, 2, 1] against [1, 2, 3]
  assert not bool(label_rules.is_integral([a, b], 6))
  exact = _estimate([3.02, 0.99, 1.99], 6)
  assert bool(label_rules.is_integral([a, exact], 6))
  np.testing.assert_array_equal(label_rules.select([a, exact], 6).counts, [3, 1, 2])


def test_recentred_takes_over_off_integers_where_agreed_or_the_victim_is_unconfident():
  k = 4
  rec = _estimate([1.6, 0.4, 1.3, 0.7], k)          # rounds to [2, 0, 1, 1]
  other = _estimate([1.2, 0.9, 1.1, 0.8], k)        # rounds to [1, 1, 1, 1]
  agreeing = _estimate([1.7, 0.3, 0.6, 1.4], k)     # rounds to [2, 0, 1, 1]
  off = [rec, other]                                # neither sits on integers
  chance, certain = jnp.full((8, 4), 0.25), jnp.eye(4)[jnp.arange(8) % 4]
  takes = lambda others, estimates, probs: bool(label_rules.recentred_takes_over(
      rec, others, estimates, probs, k))
  assert takes([other], off, chance)                # unconfident victim
  assert not takes([other], off, certain)           # confident, nobody agrees: the median
  assert takes([agreeing], off, certain)            # confident, another agrees
  assert not takes([other], [_estimate([2.0, 0.0, 1.0, 1.0], k)], chance)  # integral
  # Not on 3-class heads, however unconfident the victim.
  rec3, other3 = _estimate([1.6, 1.3, 1.1], k), _estimate([1.2, 1.4, 1.4], k)
  assert not bool(label_rules.recentred_takes_over(rec3, [other3], [rec3, other3],
                                                   jnp.full((8, 3), 1 / 3), k))
