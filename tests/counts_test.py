"""Rounding scores to count vectors, ranked hypotheses and integrality (jaxinvert.counts)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import counts


def test_round_counts_nonnegative_and_sum_to_k():
  rng = np.random.default_rng(0)
  for k in (1, 5, 16, 100):
    scores = rng.normal(k / 10, 2.0, size=10).astype(np.float32)
    rounded = np.asarray(counts.round_counts(scores, k))
    assert rounded.sum() == k and rounded.min() >= 0
  np.testing.assert_array_equal(counts.round_counts(jnp.array([2.6, 0.3, 1.1]), 4), [3, 0, 1])
  with pytest.raises(ValueError, match="num_images .* positive, got 0"):
    counts.round_counts(jnp.array([0.2, 0.1]), 0)


def test_round_counts_respects_a_minimum():
  rounded = counts.round_counts(jnp.array([5.0, 0.0, 0.1, 0.2]), 4,
                                minimum=jnp.array([0, 1, 0, 1]))
  np.testing.assert_array_equal(rounded, [2, 1, 0, 1])  # without: [4, 0, 0, 0]


def test_hypotheses_ranked_distinct_and_best_first():
  scores = jnp.array([2.55, 0.45, 1.0, 0.0, 3.9])
  hyps = np.asarray(counts.hypotheses(scores, num_images=8, num=6))
  assert hyps.shape == (6, 5)
  np.testing.assert_array_equal(hyps[0], counts.round_counts(scores, 8))
  assert len({tuple(h) for h in hyps}) == 6
  costs = np.sum((hyps - np.asarray(scores)) ** 2, axis=1)
  assert np.all(np.diff(costs) >= -1e-6)
  assert np.all(hyps.sum(1) == 8) and hyps.min() >= 0
  # The runner-up moves one unit across the closest boundary (0.45 -> 1, 2.55 -> 2).
  np.testing.assert_array_equal(hyps[1], [2, 1, 1, 0, 4])


def test_hypotheses_respect_a_minimum():
  # The scores of the fit's failure case: five classes certainly present, but the
  # scores overshoot K, and unconstrained rounding drops a present class (index 4).
  scores = jnp.array([1.19, 2.19, 1.0, 1.0, 1.0, 3.95])
  minimum = jnp.array([1, 0, 1, 1, 1, 1])
  free = np.asarray(counts.hypotheses(scores, num_images=8, num=4))
  assert np.any(free < np.asarray(minimum))  # what the minimum is there to stop
  hyps = np.asarray(counts.hypotheses(scores, num_images=8, num=4, minimum=minimum))
  np.testing.assert_array_equal(hyps[0], counts.round_counts(scores, 8, minimum=minimum))
  assert np.all(hyps >= np.asarray(minimum)) and np.all(hyps.sum(1) == 8)
  assert len({tuple(h) for h in hyps}) == 4


def test_hypotheses_exist_around_integral_scores():
  # A certified estimate (`fit`) gives scores on integers: every margin ties, and the
  # alternatives must still move units out of the classes that hold them.
  scores = jnp.zeros(20).at[12].set(2.0).at[17].set(2.0)
  hyps = np.asarray(counts.hypotheses(scores, num_images=4, num=5))
  np.testing.assert_array_equal(hyps[0], np.asarray(scores))
  assert len({tuple(h) for h in hyps}) == 5
  assert np.all(hyps.sum(1) == 4) and hyps.min() >= 0
  # Each runner-up moves one unit (cost 2), so out of class 12 or 17.
  assert np.all(np.abs(hyps[1:] - hyps[0]).sum(1) == 2)
  assert np.all(np.minimum(hyps[1:, 12], hyps[1:, 17]) == 1)


def test_hypotheses_too_many_raises():
  with pytest.raises(ValueError, match="only"):
    counts.hypotheses(jnp.array([1.0]), num_images=1, num=3)


def test_fractional_distance_ignores_classes_rounded_to_zero():
  # Counts [3, 0, 0, 3]: 0.4 rounds to zero and is left out; the mean is over 3.0, 2.9.
  assert float(counts.fractional_distance(jnp.array([3.0, 0.4, 0.0, 2.9]), 6)) == (
      pytest.approx(0.05, abs=1e-5))


def test_every_count_vector_lists_each_vector_once():
  every = counts.every_count_vector(4, 3)
  assert every.shape == (counts.num_count_vectors(4, 3), 3) == (15, 3)
  assert np.all(every.sum(1) == 4) and every.min() >= 0
  assert len({tuple(v) for v in every.tolist()}) == 15
  np.testing.assert_array_equal(counts.every_count_vector(4, 2),
                                [[0, 4], [1, 3], [2, 2], [3, 1], [4, 0]])
  assert counts.num_count_vectors(8, 3) == 45 and counts.num_count_vectors(1, 1) == 1
  with pytest.raises(ValueError, match="positive, got 0 and 2"):
    counts.every_count_vector(0, 2)


def test_candidates_are_every_vector_on_small_heads_with_the_rounded_one_first():
  small = np.asarray(counts.candidates(jnp.array([2.7, 1.3]), num_images=4, num=8))
  assert small.shape == (5, 2)                       # all 5, fewer than num
  np.testing.assert_array_equal(small[0], [3, 1])    # what the scores round to
  assert {tuple(v) for v in small.tolist()} == {(0, 4), (1, 3), (2, 2), (3, 1), (4, 0)}
  # 45 vectors for K = 8 on 3 classes: above num, so the ranked hypotheses.
  scores = jnp.array([2.4, 3.1, 2.6])
  ranked = np.asarray(counts.candidates(scores, num_images=8, num=8))
  np.testing.assert_array_equal(ranked, counts.hypotheses(scores, num_images=8, num=8))
  with pytest.raises(ValueError, match="candidates must be positive"):
    counts.candidates(scores, num_images=8, num=0)


def test_candidates_repeat_the_best_where_few_valid_vectors_exist():
  # One class holds every image and the others sit at zero: few moves stay non-negative.
  scores = jnp.array([6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
  got = np.asarray(counts.candidates(scores, num_images=6, num=300))
  assert got.shape == (300, 7)
  assert got.min() >= 0 and np.all(got.sum(1) == 6)
  assert len({tuple(v) for v in got.tolist()}) < 300   # padded with repeats, not invalid rows
  np.testing.assert_array_equal(got[0], [6, 0, 0, 0, 0, 0, 0])


def test_distinct_keeps_each_vector_once_in_first_seen_order():
  got = counts.distinct(jnp.array([[3, 1], [2, 2], [3, 1], [0, 4], [2, 2]]))
  np.testing.assert_array_equal(got, [[3, 1], [2, 2], [0, 4]])
