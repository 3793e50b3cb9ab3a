import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import label_dummies, label_rules, labels, models, victim
from jaxinvert.types import CLASSIFIER, Model


class _SimplexFeatures(nn.Module):
  """Features that sum to one per image, so Geng et al.'s weight form is exact."""

  num_classes: int = 5

  @nn.compact
  def __call__(self, x, train=True, return_features=False):
    del train
    f = jax.nn.softmax(nn.Dense(6)(x.reshape(x.shape[0], -1)))
    return f if return_features else nn.Dense(self.num_classes, name=CLASSIFIER)(f)


def _toy():
  model = Model("toy", _SimplexFeatures(), (4, 4, 3), 5, False)
  variables = model.init(jax.random.key(0))
  return model, variables


def _batch(labels_list, seed=0, shape=(4, 4, 3)):
  y = jnp.asarray(labels_list, jnp.int32)
  x = jax.random.uniform(jax.random.key(seed), (len(labels_list), *shape))
  return x, y


def _true_counts(y, n):
  return np.bincount(np.asarray(y), minlength=n)


def test_formulas_exact_with_the_batch_statistics_and_signs_match_victim():
  model, variables = _toy()
  x, y = _batch([0, 0, 0, 2, 4, 4])
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  # "Dummies" equal to the real batch: the estimates are then exact (and the signs of
  # the derivation agree with the gradient the victim computes).
  real_features = lambda v, dummies: model.features(v, x)
  kwargs = dict(update=grad, features_fn=real_features, variables=variables, num_images=6,
                image_shape=model.image_shape)
  for method in (labels.geng, labels.geng_bias):
    estimate = method(jax.random.key(0), **kwargs)
    np.testing.assert_allclose(estimate.scores, _true_counts(y, 5), atol=1e-4)
    np.testing.assert_array_equal(estimate.counts, _true_counts(y, 5))


class _ConstantFeatures(nn.Module):
  """Every image has the same (learned) feature vector: the batch's mean feature is all
  there is to know, so re-centring the dummies on it makes the bias form exact."""

  @nn.compact
  def __call__(self, x, train=True, return_features=False):
    del train
    o = self.param("o", nn.initializers.uniform(1.0), (6,))
    f = jnp.broadcast_to(o, (x.shape[0], 6))
    return f if return_features else nn.Dense(5, name=CLASSIFIER)(f)


def test_recentred_exact_where_dummies_miss_only_the_batch_mean_feature():
  model = Model("constant", _ConstantFeatures(), (4, 4, 3), 5, False)
  variables = model.init(jax.random.key(1))
  x, y = _batch([0, 0, 0, 2, 4, 4])
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  o = variables["params"]["o"]
  # Dummies whose features are all another non-negative vector than the batch's.
  dummy_features = lambda v, d: (jnp.broadcast_to(0.3 * o + 0.7, (d.shape[0], 6)), {})
  kwargs = dict(update=grad, features_fn=dummy_features, variables=variables, num_images=6,
                image_shape=model.image_shape)
  truth = _true_counts(y, 5)
  plain = labels.geng_bias(jax.random.key(0), **kwargs)
  assert np.max(np.abs(np.asarray(plain.scores) - truth)) > 0.1  # the dummies do miss
  fn = jax.jit(lambda k, u: labels.restore(k, method=labels.Method.RECENTRED,
                                           **{**kwargs, "update": u}))
  estimate = fn(jax.random.key(0), grad)
  np.testing.assert_allclose(estimate.scores, truth, atol=1e-4)
  np.testing.assert_array_equal(estimate.counts, truth)
  with pytest.raises(ValueError, match="rounds"):
    labels.recentred(jax.random.key(0), rounds=0, **kwargs)


def test_recentred_regresses_the_mean_feature_when_no_class_is_absent():
  # Every class is in the batch: after the first round nothing rounds to zero, so there
  # is no absent row to read the mean feature from, and it is regressed from all rows.
  model = Model("constant", _ConstantFeatures(), (4, 4, 3), 5, False)
  variables = model.init(jax.random.key(1))
  x, y = _batch([0, 0, 1, 2, 3, 4, 4])
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  o = variables["params"]["o"]
  dummy_features = lambda v, d: (jnp.broadcast_to(0.3 * o + 0.7, (d.shape[0], 6)), {})
  kwargs = dict(update=grad, features_fn=dummy_features, variables=variables, num_images=7,
                image_shape=model.image_shape)
  truth = _true_counts(y, 5)
  assert truth.min() >= 1
  plain = labels.geng_bias(jax.random.key(0), **kwargs)
  assert np.max(np.abs(np.asarray(plain.scores) - truth)) > 0.1  # the dummies do miss
  estimate = jax.jit(lambda k: labels.recentred(k, **kwargs))(jax.random.key(0))
  np.testing.assert_allclose(estimate.scores, truth, atol=1e-4)
  np.testing.assert_array_equal(estimate.counts, truth)


def test_recentred_keeps_the_dummies_mean_with_two_classes():
  # With two classes the rows, bias gradients and covariance terms are each the negative
  # of the other, so the regressed mean fits both rows exactly whatever its error, and
  # the fit cannot tell how far to trust it: recentred keeps the dummies' own mean there,
  # i.e. the bias form on the same dummies. (Regressed, the mean is K dW_0 / K db_0, a
  # ratio of two small differences: on five 2-class victims recentred was exact in fewer
  # batches with it than without, docs/labels.md, "Small heads".)
  model = Model("toy2", _SimplexFeatures(num_classes=2), (4, 4, 3), 2, False)
  variables = model.init(jax.random.key(0))
  x, y = _batch([0, 0, 1, 1, 1], seed=3)
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  kwargs = dict(update=grad, features_fn=model.features, variables=variables, num_images=5,
                image_shape=model.image_shape, num_dummies=64,
                dummy_dist=labels.DummyDist.UNIFORM)
  estimate = jax.jit(lambda k: labels.recentred(k, **kwargs))(jax.random.key(4))
  assert np.asarray(estimate.counts).min() >= 1  # nothing absent: the regression's case
  plain = labels.geng_bias(jax.random.key(4), **kwargs)
  np.testing.assert_allclose(estimate.scores, plain.scores, atol=1e-4)


def test_one_flagged_class_of_two_is_not_read_as_a_one_class_batch():
  # Two classes: one bias gradient is always negative, so one flagged class says little.
  estimate = jnp.array([5.2, 2.8])
  present = jnp.array([1, 0])
  np.testing.assert_array_equal(labels.with_present(estimate, present, 8).counts, [5, 3])
  np.testing.assert_array_equal(
      labels.with_present(estimate, present, 8, one_class=True).counts, [8, 0])
  # An untrained 2-class LeNet, batches of five images of class 0 and three of class 1:
  # the sign rule flags class 0 alone, and SELECT (which read that as eight images of
  # class 0 before) returns the batch's counts.
  model = models.get_model("lenet", num_classes=2, image_size=8, width=4)
  variables = model.init(jax.random.key(0))
  y = jnp.array([0, 0, 0, 0, 0, 1, 1, 1])
  kwargs = dict(features_fn=model.features, variables=variables, num_images=8,
                image_shape=model.image_shape, feature_domain=labels.FeatureDomain.UNIT)

  @jax.jit
  @jax.vmap
  def restore(seed):
    update = victim.fedsgd_update(model.apply, variables,
                                  jax.random.uniform(jax.random.key(seed), (8, 8, 8, 3)), y)
    return (labels.certain_classes(update, 8, labels.FeatureDomain.UNIT),
            labels.restore(jax.random.key(1), method=labels.Method.SELECT, update=update,
                           **kwargs).counts)

  present, counts = restore(jnp.array([0, 2, 3]))
  np.testing.assert_array_equal(present, [[1, 0]] * 3)
  np.testing.assert_array_equal(counts, [[5, 3]] * 3)


def test_one_flagged_class_of_three_yields_to_unanimous_integral_estimates():
  # An untrained 3-class LeNet puts about 4/3 of its softmax mass on each class, so in
  # a batch of three images of class 0 and one of class 1 only class 0 is flagged.
  model = models.get_model("lenet", num_classes=3, image_size=8, width=4)
  variables = model.init(jax.random.key(0))
  kwargs = dict(features_fn=model.features, variables=variables, num_images=4,
                image_shape=model.image_shape, feature_domain=labels.FeatureDomain.UNIT)
  estimators = (labels.Method.RECENTRED, labels.Method.GENG_BIAS, labels.Method.ILRG,
                labels.Method.CLUSTER)

  @jax.jit
  @functools.partial(jax.vmap, in_axes=(0, None))
  def restore(seed, y):
    update = victim.fedsgd_update(model.apply, variables,
                                  jax.random.uniform(jax.random.key(seed), (4, 8, 8, 3)), y)
    key = jax.random.key(2)  # the estimates' own dummies (SELECT draws its own)
    raw = [labels.restore(key, method=m, update=update, **kwargs) for m in estimators]
    present = labels.certain_classes(update, 4, labels.FeatureDomain.UNIT)
    chosen = labels.restore(jax.random.key(1), method=labels.Method.SELECT, update=update,
                            **kwargs)
    ruled = labels.with_present(chosen.scores, present, 4, one_class=True)
    return present, labels.one_class_overruled(raw, present, 4), chosen.counts, ruled.counts

  seeds = jnp.array([0, 1, 3])
  present, overruled, counts, ruled = restore(seeds, jnp.array([0, 0, 0, 1]))
  np.testing.assert_array_equal(present, [[1, 0, 0]] * 3)
  # All four closed forms sit on [3, 1, 0] (at N=3 SELECT asks `recentred` and
  # `geng_bias`): they overrule the rule, which read [4, 0, 0].
  np.testing.assert_array_equal(overruled, [True] * 3)
  np.testing.assert_array_equal(counts, [[3, 1, 0]] * 3)
  np.testing.assert_array_equal(ruled, [[4, 0, 0]] * 3)
  # A one-class batch flags the same class, and there the rule stands.
  present, overruled, counts, _ = restore(seeds, jnp.zeros(4, jnp.int32))
  np.testing.assert_array_equal(present, [[1, 0, 0]] * 3)
  np.testing.assert_array_equal(overruled, [False] * 3)
  np.testing.assert_array_equal(counts, [[4, 0, 0]] * 3)


def test_fedavg_one_class_batch_exact_where_a_closed_form_is_not():
  model, variables = _lenet()
  y = jnp.full((6,), 3, jnp.int32)
  x = jax.random.uniform(jax.random.key(0), (6, *model.image_shape))
  end = victim.fedavg_update(model.apply, variables, x, y, local_epochs=2,
                             local_batch_size=3, local_lr=1.0)
  kwargs = dict(start=variables, end=end, local_lr=1.0, local_steps=4,
                features_fn=model.features, num_images=6, image_shape=model.image_shape,
                feature_domain=labels.FeatureDomain.UNIT)
  gradient = labels.fedavg_gradient(victim.weight_delta(variables, end), local_lr=1.0,
                                    steps=4)
  np.testing.assert_array_equal(labels.certain_classes(gradient, 6, labels.FeatureDomain.UNIT),
                                np.eye(10, dtype=int)[3])
  closed_form = labels.restore_fedavg(jax.random.key(0), method=labels.Method.CLUSTER, **kwargs)
  assert not np.array_equal(closed_form.counts, _true_counts(y, 10))  # the fitted client
  selected = labels.restore_fedavg(jax.random.key(0), method=labels.Method.SELECT, **kwargs)
  np.testing.assert_array_equal(selected.counts, _true_counts(y, 10))


@pytest.mark.parametrize("setting", ["fedsgd", "fedavg"])
def test_negative_last_layer_gradient_only_on_classes_in_the_batch(setting):
  model, variables = _lenet()
  kwargs = dict(features_fn=model.features, num_images=4, image_shape=model.image_shape,
                feature_domain=labels.FeatureDomain.UNIT)

  # One program for the six batches (same shapes), so that the suite compiles it once.
  @jax.jit
  def restore(key, x, y):
    if setting == "fedsgd":
      update = victim.fedsgd_update(model.apply, variables, x, y)
      estimate = labels.restore(key, method=labels.Method.SELECT, update=update,
                                variables=variables, **kwargs)
    else:
      end = victim.fedavg_update(model.apply, variables, x, y, local_epochs=2,
                                 local_batch_size=2, local_lr=1.0)
      update = labels.fedavg_gradient(victim.weight_delta(variables, end), local_lr=1.0,
                                      steps=4)
      estimate = labels.restore_fedavg(key, method=labels.Method.SELECT, start=variables,
                                       end=end, local_lr=1.0, local_steps=4, **kwargs)
    return (estimate.counts, labels.certain_classes(update, 4, labels.FeatureDomain.UNIT),
            labels.certain_classes(update, 4, labels.FeatureDomain.REAL))

  rng = np.random.default_rng(0)
  certified = 0
  for seed in range(6):
    y_list = rng.integers(0, 10, size=4).tolist() if seed % 2 else rng.choice(
        10, 4, replace=False).tolist()
    x, y = _batch(y_list, seed=seed, shape=model.image_shape)
    counts, present, from_bias = map(np.asarray, restore(jax.random.key(seed), x, y))
    assert set(np.flatnonzero(from_bias)) <= set(np.flatnonzero(present)) <= set(y_list)
    assert np.all(counts >= present)
    if present.sum() == 4:
      certified += 1
      np.testing.assert_array_equal(counts, _true_counts(y, 10))
  assert certified >= 1  # the unique-label batches


def _lenet():
  model = models.get_model("lenet", num_classes=10, image_size=8, width=4)
  return model, jax.jit(model.init)(jax.random.key(3))


@pytest.mark.parametrize("method", [labels.Method.CLUSTER, labels.Method.ILRG,
                                    labels.Method.GENG_BIAS, labels.Method.SELECT,
                                    labels.Method.FIT])
def test_fedsgd_recovers_multiset_with_duplicates(method, heavy_compile_options):
  model, variables = _lenet()
  x, y = _batch([1, 1, 1, 4, 7], seed=2, shape=model.image_shape)
  grad = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  counts = jax.jit(lambda k, g: labels.restore(
      k, method=method, update=g, features_fn=model.features, variables=variables,
      num_images=5, image_shape=model.image_shape, num_dummies=256,
      feature_domain=labels.FeatureDomain.UNIT).counts,
      compiler_options=(heavy_compile_options if method == labels.Method.FIT else None)
      )(jax.random.key(1), grad)
  np.testing.assert_array_equal(counts, _true_counts(y, 10))


def test_cluster_sums_over_the_classes_of_largest_count():
  model, variables = _lenet()
  x, y = _batch([1, 1, 1, 4, 7], seed=2, shape=model.image_shape)
  grad = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  run = jax.jit(lambda g, rows: labels.cluster(g, variables=variables, num_images=5,
                                               feature_domain=labels.FeatureDomain.UNIT,
                                               rows=rows), static_argnums=1)
  full, default, few = run(grad, 10), run(grad, None), run(grad, 4)
  np.testing.assert_array_equal(default.scores, full.scores)  # 20 K >= N: every class
  np.testing.assert_array_equal(full.counts, _true_counts(y, 10))
  # Three classes hold the images: four rows keep them, and the answer.
  np.testing.assert_array_equal(few.counts, full.counts)
  assert 0 < float(jnp.abs(few.scores - full.scores).max()) < 0.05
  with pytest.raises(ValueError, match="rows must be positive"):
    run(grad, 0)


def test_fedavg_recovers_multiset_with_duplicates():
  model, variables = _lenet()
  x, y = _batch([2, 2, 5, 9], seed=4, shape=model.image_shape)
  new = jax.jit(lambda v, a, b: victim.fedavg_update(
      model.apply, v, a, b, local_epochs=1, local_batch_size=2, local_lr=0.01))(variables, x, y)
  for point in labels.StatsPoint:
    estimate = labels.restore_fedavg(
        jax.random.key(1), method=labels.Method.CLUSTER, start=variables, end=new,
        features_fn=model.features, num_images=4, image_shape=model.image_shape,
        local_lr=0.01, local_steps=2, stats_point=point,
        feature_domain=labels.FeatureDomain.UNIT)
    np.testing.assert_array_equal(estimate.counts, _true_counts(y, 10), err_msg=str(point))


def _toy_fedavg_scores():
  """`restore_fedavg`'s scores, as a function of the method and options, on one FedAvg
  round of the toy victim (a batch of 4 with class 0 twice, 3 full-batch steps at lr 0.5)."""
  model, variables = _toy()
  x, y = _batch([0, 0, 2, 4])
  new = jax.jit(lambda v, a, b: victim.fedavg_update(
      model.apply, v, a, b, local_epochs=3, local_batch_size=4, local_lr=0.5))(variables, x, y)
  return lambda method, **kw: labels.restore_fedavg(
      jax.random.key(3), method=method, start=variables, end=new, features_fn=model.features,
      num_images=4, image_shape=model.image_shape, local_lr=0.5, local_steps=3, **kw).scores


def test_fedavg_speedup_moves_the_trajectory_estimate_from_its_first_point(monkeypatch):
  run = _toy_fedavg_scores()
  bias = labels.Method.GENG_BIAS
  first = run(bias, stats_point=labels.StatsPoint.START)  # the trajectory's first point
  mean = run(bias)  # a published form: the plain mean by default
  np.testing.assert_allclose(run(bias, speedup=1.0), mean)
  assert float(jnp.abs(mean - first).max()) > 0.01  # the statistics move along the update
  np.testing.assert_allclose(run(bias, speedup=2.0), 2 * mean - first, atol=1e-4)
  # Ours move FEDAVG_SPEEDUP times as far by default.
  ours = labels.Method.RECENTRED
  default = run(ours)
  np.testing.assert_allclose(default, run(ours, speedup=labels.FEDAVG_SPEEDUP))
  assert float(jnp.abs(default - run(ours, speedup=1.0)).max()) > 1e-3
  # ... SELECT and FIT too (traced only: which speed-up their trajectory mean gets).
  used = []
  original = labels._sped_up
  monkeypatch.setattr(labels, "_sped_up", lambda p, k: used.append(k) or original(p, k))
  for method in (labels.Method.SELECT, labels.Method.FIT, bias):
    jax.eval_shape(lambda: run(method))
  assert used == [labels.FEDAVG_SPEEDUP, labels.FEDAVG_SPEEDUP, 1.0]
  with pytest.raises(ValueError, match="speedup must be positive"):
    run(bias, speedup=0.0)
  with pytest.raises(ValueError, match="needs stats_point=TRAJECTORY"):
    run(bias, speedup=2.0, stats_point=labels.StatsPoint.END)
  with pytest.raises(ValueError, match="needs stats_point=TRAJECTORY"):
    run(bias, speedup=2.0, trajectory_points=1)
  # Off the trajectory nothing moves, and the default does not complain.
  np.testing.assert_allclose(run(ours, stats_point=labels.StatsPoint.START),
                             run(ours, stats_point=labels.StatsPoint.START, speedup=1.0))


def test_fedavg_select_gives_our_dummies_to_every_estimator(monkeypatch):
  # U(0, 1) for every method on FedAvg before 2026-12-07. Now RECENTRED takes OUR_DUMMIES
  # and the published forms U(0, 1), as on a gradient, while SELECT and FIT give
  # OUR_DUMMIES to every estimator, their GENG_BIAS stand-in included (on a gradient it
  # keeps U(0, 1)); an explicit dummy_dist applies to every estimator.
  run = _toy_fedavg_scores()
  recentred = labels.Method.RECENTRED
  np.testing.assert_array_equal(run(recentred), run(recentred, dummy_dist=labels.OUR_DUMMIES))
  assert not np.allclose(run(recentred), run(recentred, dummy_dist=labels.DummyDist.UNIFORM))
  drawn = []  # the kinds of dummies each method draws (traced only)
  original = label_dummies.dummy_images
  monkeypatch.setattr(label_dummies, "dummy_images",
                      lambda key, **kw: drawn.append(kw["dist"]) or original(key, **kw))
  def kinds(method, **kw):
    drawn.clear()
    jax.eval_shape(lambda: run(method, **kw))
    return set(drawn)
  jittered, uniform = labels.DummyDist.JITTERED, labels.DummyDist.UNIFORM
  assert kinds(recentred) == {jittered}
  assert kinds(labels.Method.GENG_BIAS) == kinds(labels.Method.LLG_PLUS) == {uniform}
  assert kinds(labels.Method.SELECT) == kinds(labels.Method.FIT) == {jittered}
  assert kinds(labels.Method.SELECT, dummy_dist=uniform) == {uniform}
  assert kinds(labels.Method.GENG_BIAS, dummy_dist=jittered) == {jittered}


def test_fedavg_fit_keeps_a_clear_winner_reuses_the_trajectory_and_rejects_bad_options(
    monkeypatch):
  # One compiled program (the margin is an argument) serves every run that executes; the
  # count of SELECT calls is taken while tracing.
  model, variables = _lenet()
  x, y = _batch([2, 2, 5, 9], seed=4, shape=model.image_shape)
  new = jax.jit(lambda v, a, b: victim.fedavg_update(
      model.apply, v, a, b, local_epochs=3, local_batch_size=4, local_lr=0.001))(variables, x, y)
  kwargs = dict(start=variables, end=new, features_fn=model.features, num_images=4,
                image_shape=model.image_shape, local_lr=0.001, local_steps=3,
                feature_domain=labels.FeatureDomain.UNIT)
  calls = []
  original = labels._select
  monkeypatch.setattr(labels, "_select", lambda *a, **k: calls.append(1) or original(*a, **k))
  restore = jax.jit(lambda key, margin, **options: labels.restore_fedavg(
      key, method=labels.Method.FIT, fit_margin=margin, trajectory_points=5, **kwargs,
      **options), static_argnames=("fit_point", "select_from"))
  key = jax.random.key(2)
  fit = restore(key, labels.FEDAVG_FIT_MARGIN)
  assert len(calls) == 5  # the midpoint's SELECT is one of the five, not a sixth
  np.testing.assert_array_equal(fit.counts, _true_counts(y, 10))
  calls.clear()
  jax.eval_shape(lambda k: restore(k, labels.FEDAVG_FIT_MARGIN, fit_point=0.4), key)
  assert len(calls) == 6  # off the trajectory's points: one more
  # No margin is met: SELECT's answer, trajectory statistics and all.
  select = jax.jit(lambda k: labels.restore_fedavg(k, method=labels.Method.SELECT,
                                                   **kwargs))(key)
  never = restore(key, jnp.inf)
  np.testing.assert_array_equal(never.counts, select.counts)
  np.testing.assert_allclose(never.scores, select.scores, atol=1e-6)
  # SELECT's estimators default to SELECT_FROM, as on a gradient.
  explicit = jax.jit(lambda k: labels.restore_fedavg(
      k, method=labels.Method.SELECT, select_from=labels.SELECT_FROM, **kwargs))(key)
  np.testing.assert_array_equal(explicit.scores, select.scores)
  # ... while with the default margin the answer is the fit's (its own bias-form scores).
  assert float(jnp.abs(fit.scores - select.scores).max()) > 1e-5
  # Methods may be named by their values, as in `restore` (the same program once named).
  named = restore(key, labels.FEDAVG_FIT_MARGIN, select_from=("recentred", "ilrg", "cluster"))
  np.testing.assert_array_equal(named.counts, fit.counts)
  kwargs["method"] = labels.Method.FIT
  with pytest.raises(ValueError, match="fit_tolerance"):
    labels.restore_fedavg(key, fit_tolerance=1e-6, **kwargs)
  with pytest.raises(ValueError, match="fit_point"):
    labels.restore_fedavg(key, fit_point=1.5, **kwargs)
  with pytest.raises(TypeError, match="num_dummys"):
    labels.restore_fedavg(key, num_dummys=8, **kwargs)
  with pytest.raises(ValueError, match="select_from"):
    labels.restore_fedavg(key, select_from=[labels.Method.FIT], **kwargs)
  with pytest.raises(ValueError, match="num_images"):
    labels.restore_fedavg(key, **{**kwargs, "num_images": 0})


def test_idlg_single_image_and_gradinversion_unique():
  model, variables = _lenet()
  x, y = _batch([6], seed=5, shape=model.image_shape)
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  np.testing.assert_array_equal(labels.idlg(grad).counts, _true_counts(y, 10))
  x, y = _batch([0, 3, 8], seed=6, shape=model.image_shape)
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  np.testing.assert_array_equal(labels.gradinversion(grad, num_images=3).counts,
                                _true_counts(y, 10))
  with pytest.raises(ValueError, match="K <= N"):
    labels.gradinversion(grad, num_images=11)


@pytest.mark.parametrize("case,match", [
    ("k_zero", "must be positive"),
    ("wrong_layer", "shape"),
    ("nan", "NaN or Inf"),
    ("no_classifier", "no last layer"),
])
def test_bad_input(case, match):
  model, variables = _lenet()
  x, y = _batch([1, 2], shape=model.image_shape)
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  k = 2
  if case == "k_zero":
    k = 0
  elif case == "wrong_layer":
    grad = {**grad, CLASSIFIER: {"kernel": jnp.zeros((5, 10)), "bias": jnp.zeros(10)}}
  elif case == "nan":
    grad = {**grad, CLASSIFIER: {**grad[CLASSIFIER],
                                 "bias": grad[CLASSIFIER]["bias"].at[0].set(jnp.nan)}}
  elif case == "no_classifier":
    grad = {"conv0": grad["conv0"]}
  with pytest.raises(ValueError, match=match):
    labels.restore(jax.random.key(0), method=labels.Method.GENG, update=grad,
                   features_fn=model.features, variables=variables, num_images=k,
                   image_shape=model.image_shape)


def test_select_from_must_name_closed_forms_and_defaults_to_recentred_trio():
  model, variables = _toy()
  x, y = _batch([0, 0, 2, 4])
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  kwargs = dict(update=grad, features_fn=model.features, variables=variables, num_images=4,
                image_shape=model.image_shape)
  for bad in ([labels.Method.SELECT], []):
    with pytest.raises(ValueError, match="select_from"):
      labels.restore(jax.random.key(0), method=labels.Method.SELECT, select_from=bad, **kwargs)
  assert labels.Method.RECENTRED in labels.SELECT_FROM
  assert not hasattr(labels, "FEDAVG_SELECT_FROM")  # FedAvg's SELECT reads SELECT_FROM too
  # With the FedSGD trio passed explicitly, SELECT is what it is by default.
  np.testing.assert_array_equal(
      labels.restore(jax.random.key(0), method=labels.Method.SELECT, **kwargs).scores,
      labels.restore(jax.random.key(0), method=labels.Method.SELECT,
                     select_from=labels.SELECT_FROM, **kwargs).scores)


def test_fedavg_select_reads_recentred(monkeypatch):
  # On a FedAvg update SELECT combines RECENTRED (not GENG_BIAS, as before 2026-12-07):
  # an integral RECENTRED at every trajectory point is the answer, scores and all.
  model, variables = _toy()
  x, y = _batch([0, 0, 2, 4])
  new = jax.jit(lambda v, a, b: victim.fedavg_update(
      model.apply, v, a, b, local_epochs=2, local_batch_size=4, local_lr=0.001))(variables, x, y)
  run = lambda **kw: np.asarray(labels.restore_fedavg(
      jax.random.key(0), method=labels.Method.SELECT, start=variables, end=new,
      features_fn=model.features, num_images=4, image_shape=model.image_shape,
      local_lr=0.001, local_steps=2, **kw).scores)
  truth = [2.0, 0.0, 1.0, 0.0, 1.0]
  assert not np.array_equal(run(), truth)  # the real estimators are off integers here
  exact = lambda key, **kw: labels.LabelEstimate(jnp.array(truth),
                                                 jnp.array([2, 0, 1, 0, 1], jnp.int32))
  monkeypatch.setattr(labels, "recentred", exact)
  np.testing.assert_array_equal(run(), truth)
  old_trio = (labels.Method.GENG_BIAS, labels.Method.ILRG, labels.Method.CLUSTER)
  assert not np.array_equal(run(select_from=old_trio), truth)


def test_select_lets_recentred_in_only_where_it_is_integral(monkeypatch):
  model, variables = _toy()
  x, y = _batch([0, 0, 2, 4])
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  kwargs = dict(update=grad, features_fn=model.features, variables=variables, num_images=4,
                image_shape=model.image_shape)
  old_trio = (labels.Method.GENG_BIAS, labels.Method.ILRG, labels.Method.CLUSTER)
  run = lambda **kw: np.asarray(labels.restore(jax.random.key(0), method=labels.Method.SELECT,
                                               **kwargs, **kw).scores)
  # An off-integer recentred (every score 0.4 from an integer) is replaced by geng_bias.
  off = lambda key, **kw: labels.LabelEstimate(jnp.array([1.4, 0.4, 0.6, 0.4, 1.2]),
                                               jnp.array([1, 0, 1, 0, 2], jnp.int32))
  monkeypatch.setattr(labels, "recentred", off)
  np.testing.assert_array_equal(run(), run(select_from=old_trio))
  # An integral one is kept, and as the most integral estimate select returns it.
  exact = lambda key, **kw: labels.LabelEstimate(jnp.array([2.0, 0.0, 1.0, 0.0, 1.0]),
                                                 jnp.array([2, 0, 1, 0, 1], jnp.int32))
  monkeypatch.setattr(labels, "recentred", exact)
  np.testing.assert_array_equal(run(), [2.0, 0.0, 1.0, 0.0, 1.0])


def test_select_takes_recentred_off_integers_where_another_estimator_agrees(monkeypatch):
  model, variables = _toy()
  x, y = _batch([0, 0, 2, 4])  # counts [2, 0, 1, 0, 1]
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  kwargs = dict(update=grad, features_fn=model.features, variables=variables, num_images=4,
                image_shape=model.image_shape)
  fixed = lambda scores: lambda *args, **kw: labels.LabelEstimate(
      jnp.array(scores), labels.round_counts(jnp.array(scores), 4))
  # None sits on integers (fractional distances 0.27, 0.23, 0.28, 0.38), so SELECT
  # falls back on the median of its three, which rounds to [1, 1, 1, 0, 1].
  monkeypatch.setattr(labels, "recentred", fixed([1.7, 0.2, 1.3, 0.0, 0.8]))
  monkeypatch.setattr(labels, "ilrg", fixed([1.2, 1.3, 0.7, 0.1, 0.7]))
  monkeypatch.setattr(labels, "cluster", fixed([0.6, 1.4, 1.2, 0.3, 0.5]))
  run = lambda: np.asarray(labels.restore(jax.random.key(0), method=labels.Method.SELECT,
                                          **kwargs).counts)
  # geng_bias (RECENTRED's stand-in) rounds as RECENTRED does: RECENTRED's counts.
  monkeypatch.setattr(labels, "geng_bias", fixed([1.6, 0.5, 0.9, 0.2, 0.8]))
  np.testing.assert_array_equal(run(), [2, 0, 1, 0, 1])
  # With no estimator agreeing with RECENTRED, the median stands on a confident victim
  # (UNCONFIDENT = 0: no victim is below it) ...
  monkeypatch.setattr(labels, "geng_bias", fixed([1.2, 0.6, 1.3, 0.2, 0.7]))
  monkeypatch.setattr(label_rules, "UNCONFIDENT", 0.0)
  np.testing.assert_array_equal(run(), [1, 1, 1, 0, 1])
  # ... and RECENTRED's counts are taken on an unconfident one (every victim is below 1.01).
  monkeypatch.setattr(label_rules, "UNCONFIDENT", 1.01)
  np.testing.assert_array_equal(run(), [2, 0, 1, 0, 1])


def test_select_trusts_recentred_on_unconfident_victims_except_on_three_classes(monkeypatch):
  # The toy victim is untrained: below UNCONFIDENT on RECENTRED's dummies.
  model, variables = _toy()
  probs = labels.dummy_statistics(jax.random.key(0), features_fn=model.features,
                                  variables=variables, image_shape=model.image_shape,
                                  num_dummies=16, dummy_dist=labels.OUR_DUMMIES)[0]
  assert 0.0 <= float(labels.confidence(probs)) < labels.UNCONFIDENT
  fixed = lambda scores: lambda *args, **kw: labels.LabelEstimate(
      jnp.array(scores), labels.round_counts(jnp.array(scores), 4))
  for num_classes, batch, rec, stand_in, others, expected in (
      # 5 classes: RECENTRED's counts, though no other estimator agrees.
      (5, [0, 0, 2, 4], [1.7, 0.2, 1.3, 0.0, 0.8], [1.2, 0.6, 1.3, 0.2, 0.7],
       ([1.2, 1.3, 0.7, 0.1, 0.7], [0.6, 1.4, 1.2, 0.3, 0.5]), [2, 0, 1, 0, 1]),
      # 3 classes: SELECT is its stand-in (geng_bias), not RECENTRED.
      (3, [0, 0, 1, 2], [1.7, 1.3, 1.0], [1.2, 1.3, 1.5], None, [1, 1, 2])):
    model = Model("toy", _SimplexFeatures(num_classes=num_classes), (4, 4, 3), num_classes,
                  False)
    variables = model.init(jax.random.key(0))
    x, y = _batch(batch)
    grad = victim.fedsgd_update(model.apply, variables, x, y)
    monkeypatch.setattr(labels, "recentred", fixed(rec))
    monkeypatch.setattr(labels, "geng_bias", fixed(stand_in))
    if others:
      monkeypatch.setattr(labels, "ilrg", fixed(others[0]))
      monkeypatch.setattr(labels, "cluster", fixed(others[1]))
    counts = labels.restore(jax.random.key(0), method=labels.Method.SELECT, update=grad,
                            features_fn=model.features, variables=variables, num_images=4,
                            image_shape=model.image_shape).counts
    np.testing.assert_array_equal(counts, expected)


def test_confidence_is_zero_at_chance_and_one_when_certain():
  np.testing.assert_allclose(labels.confidence(jnp.full((3, 4), 0.25)), 0.0, atol=1e-7)
  np.testing.assert_allclose(labels.confidence(jnp.eye(4)[:3]), 1.0)
  np.testing.assert_allclose(labels.confidence(jnp.array([[0.7, 0.3], [0.5, 0.5]])), 0.2,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="at least 2 classes"):
    labels.confidence(jnp.ones((3, 1)))


@pytest.mark.parametrize("num_classes,uses_ilrg", [(2, False), (3, False), (4, True)])
def test_select_leaves_ilrg_and_cluster_out_below_four_classes(monkeypatch, num_classes,
                                                                uses_ilrg):
  model = Model("toy", _SimplexFeatures(num_classes=num_classes), (4, 4, 3), num_classes,
                False)
  variables = model.init(jax.random.key(0))
  x, y = _batch([0, 0, 1, 1])
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  called = []
  for name in ("ilrg", "cluster"):
    real = getattr(labels, name)
    monkeypatch.setattr(labels, name, lambda *a, _real=real, _name=name, **kw: (
        called.append(_name), _real(*a, **kw))[1])
  counts = labels.restore(jax.random.key(0), method=labels.Method.SELECT, update=grad,
                          features_fn=model.features, variables=variables, num_images=4,
                          image_shape=model.image_shape).counts
  assert int(np.sum(counts)) == 4
  assert sorted(set(called)) == (["cluster", "ilrg"] if uses_ilrg else [])


def test_each_method_gets_its_own_dummies_by_default():
  # Published forms keep their authors' U(0, 1) dummies, RECENTRED takes OUR_DUMMIES;
  # SELECT / FIT have none of their own; an explicit dummy_dist applies to every method.
  assert labels.default_dummies(labels.Method.GENG_BIAS) == labels.DummyDist.UNIFORM
  assert labels.default_dummies("llg_plus") == labels.DummyDist.UNIFORM
  assert labels.default_dummies("recentred") == labels.OUR_DUMMIES == labels.DummyDist.JITTERED
  for method in ("select", "fit"):
    with pytest.raises(ValueError, match="each take their own"):
      labels.default_dummies(method)
  model, variables = _lenet()
  x, y = _batch([1, 1, 1, 4, 7], seed=2, shape=model.image_shape)
  grad = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  common = dict(update=grad, features_fn=model.features, variables=variables, num_images=5,
                image_shape=model.image_shape)
  def scores(method, dist):
    return np.asarray(labels.restore(jax.random.key(3), method=method, dummy_dist=dist,
                                     **common).scores)
  for method, own in ((labels.Method.RECENTRED, labels.DummyDist.JITTERED),
                      (labels.Method.GENG_BIAS, labels.DummyDist.UNIFORM)):
    other = (labels.DummyDist.UNIFORM if own == labels.DummyDist.JITTERED
             else labels.DummyDist.JITTERED)
    np.testing.assert_array_equal(scores(method, None), scores(method, own))
    assert not np.allclose(scores(method, None), scores(method, other))
  # Called directly, RECENTRED takes the same dummies as through `restore`.
  np.testing.assert_array_equal(labels.recentred(jax.random.key(3), **common).scores,
                                scores(labels.Method.RECENTRED, None))


def test_restore_accepts_smooth_dummies():
  model, variables = _lenet()
  x, y = _batch([1, 1, 1, 4, 7], seed=2, shape=model.image_shape)
  grad = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  estimate = labels.restore(jax.random.key(1), method=labels.Method.GENG_BIAS, update=grad,
                            features_fn=model.features, variables=variables, num_images=5,
                            image_shape=model.image_shape, num_dummies=256,
                            dummy_dist=labels.DummyDist.SMOOTH)
  np.testing.assert_array_equal(estimate.counts, _true_counts(y, 10))


def test_every_method_traces_in_float64():
  # A user with jax_enable_x64 and float64 weights: every method, FedSGD and FedAvg,
  # must trace (a branch that returned float32 beside a float64 one used to fail).
  # Traced with eval_shape only, on shapes and dtypes: this is about dtypes, not values.
  model, variables = _lenet()
  x, y = _batch([1, 1, 4], seed=2, shape=model.image_shape)
  with jax.enable_x64(True):
    to64 = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float64), t)
    variables, x = to64(variables), to64(x)
    grad = jax.eval_shape(functools.partial(victim.fedsgd_update, model.apply), variables,
                          x, y)
    assert jax.tree.leaves(grad)[0].dtype == jnp.float64
    common = dict(features_fn=model.features, num_images=3, image_shape=model.image_shape,
                  num_dummies=16, feature_domain=labels.FeatureDomain.UNIT)
    for method in labels.Method:
      fedsgd = lambda k, g, v: labels.restore(k, method=method, update=g, variables=v,
                                              **common)
      fedavg = lambda k, g, v: labels.restore_fedavg(k, method=method, start=v, end=v,
                                                     local_lr=0.1, local_steps=1, **common)
      for fn in (fedsgd, fedavg):
        out = jax.eval_shape(fn, jax.random.key(0), grad, variables)
        assert out.counts.shape == (10,), method
