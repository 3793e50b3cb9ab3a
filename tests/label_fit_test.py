"""The per-image logit fit that certifies count vectors (jaxinvert.label_fit)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import flop_count
from jaxinvert import counts as counts_lib
from jaxinvert import label_fit, labels, models, victim
from jaxinvert.types import CLASSIFIER

_N = 10


def _victim(scale=1.0):
  """A small LeNet; ``scale`` multiplies the classifier so that predictions are confident
  (as after training), which breaks the closed-form estimators."""
  model = models.get_model("lenet", num_classes=_N, image_size=8, width=4)
  variables = jax.jit(model.init)(jax.random.key(3))
  params = dict(variables["params"])
  params[CLASSIFIER] = {k: v * scale for k, v in params[CLASSIFIER].items()}
  return model, {**variables, "params": params}


def _case(label_list, scale=1.0, seed=2):
  model, variables = _victim(scale)
  y = jnp.asarray(label_list, jnp.int32)
  x = jax.random.uniform(jax.random.key(seed), (len(label_list), *model.image_shape))
  grad = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  true = jnp.asarray(np.bincount(label_list, minlength=_N))
  return model, variables, x, y, grad, true


def test_true_logits_make_the_residual_zero():
  # Checks the derivation (signs, the 1/K of the mean loss, T = K dW W^T) against the
  # gradient the victim computes.
  model, variables, x, y, grad, _ = _case([1, 1, 4, 7])
  target = label_fit.targets(grad, variables=variables, num_images=4)
  features, _ = model.features(variables, x)
  layer = variables["params"][CLASSIFIER]
  logits = features @ layer["kernel"] + layer["bias"]
  res = label_fit.residual(logits, onehot=jax.nn.one_hot(y, _N), target=target)
  assert float(jnp.sum(res ** 2) / target.scale) < 1e-10
  wrong = label_fit.residual(logits, onehot=jax.nn.one_hot(y.at[0].set(2), _N), target=target)
  assert float(jnp.sum(wrong ** 2) / target.scale) > 1e-3


def test_normal_equations_match_the_jacobian():
  # The written-out J^T J and J^T r (what Levenberg-Marquardt uses) against the ones formed
  # from jax.jacfwd of the residual, at logits away from any fit, with repeated labels.
  _, variables, _, _, grad, _ = _case([1, 1, 4, 7], scale=4.0)
  target = label_fit.targets(grad, variables=variables, num_images=4)
  logits = 3.0 * jax.random.normal(jax.random.key(5), (4, _N))
  onehot = jax.nn.one_hot(jnp.asarray([1, 1, 4, 7]), _N)
  fn = lambda z: label_fit.residual(z.reshape(4, _N), onehot=onehot, target=target)
  jac = jax.jacfwd(fn)(logits.ravel())
  hess, g = label_fit.normal_equations(logits, onehot=onehot, target=target)
  assert hess.shape == (4 * _N, 4 * _N) and g.shape == (4 * _N,)
  _assert_gauss_newton_terms(hess, g, jac=jac, residual=fn(logits.ravel()))


def _assert_gauss_newton_terms(hess, g, *, jac, residual):
  want_hess, want_g = jac.T @ jac, jac.T @ residual
  assert hess.shape == want_hess.shape and g.shape == want_g.shape
  np.testing.assert_allclose(hess, want_hess, rtol=0, atol=1e-4 * float(jnp.abs(want_hess).max()))
  np.testing.assert_allclose(g, want_g, rtol=0, atol=1e-4 * float(jnp.abs(want_g).max()))
  # A wrong formula would not pass: the cross terms alone are not small here.
  assert float(jnp.abs(want_hess - jnp.diag(jnp.diag(want_hess))).max()) > 1e-2 * float(
      jnp.abs(want_hess).max())


def test_subspace_normal_equations_match_the_jacobian():
  # The same check for the coefficients of the feature basis (`FitSpace.SUBSPACE`), whose
  # terms are projected one by one instead of through the [K, N, K, N] matrix.
  _, variables, _, _, grad, _ = _case([1, 1, 4, 7], scale=4.0)
  target = label_fit.targets(grad, variables=variables, num_images=4)
  basis = label_fit.feature_basis(grad, variables=variables, num_images=4)
  coeffs = 3.0 * jax.random.normal(jax.random.key(5), (4, basis.shape[1]))
  onehot = jax.nn.one_hot(jnp.asarray([1, 1, 4, 7]), _N)
  fn = lambda c: label_fit.residual(target.bias + c.reshape(4, -1) @ basis.T, onehot=onehot,
                                    target=target)
  jac = jax.jacfwd(fn)(coeffs.ravel())
  span = label_fit.span(basis, target=target)
  hess, g = label_fit.subspace_normal_equations(coeffs, onehot=onehot, target=target,
                                                span=span)
  assert hess.shape == (coeffs.size, coeffs.size)
  _assert_gauss_newton_terms(hess, g, jac=jac, residual=fn(coeffs.ravel()))


@pytest.mark.parametrize("moments", ["gradient", "random"])
def test_subspace_residual_is_the_residual_seen_through_the_frame(moments):
  # |residual|^2 = |subspace_residual|^2 + span.outside at any coefficients, whether T lies
  # in the span (a FedSGD gradient: outside ~ 0) or not (a random T, as a FedAvg average
  # gradient's part outside it): the identity the wide-head fit's cost rests on.
  _, variables, _, _, grad, _ = _case([1, 1, 4, 7], scale=4.0)
  target = label_fit.targets(grad, variables=variables, num_images=4)
  if moments == "random":
    target = target._replace(moments=jax.random.normal(jax.random.key(7), (_N, _N)))
  basis = label_fit.feature_basis(grad, variables=variables, num_images=4)
  span = label_fit.span(basis, target=target)
  onehot = jax.nn.one_hot(jnp.asarray([1, 1, 4, 7]), _N)
  outside = float(span.outside / jnp.sum(target.moments ** 2))
  assert (outside < 1e-10) if moments == "gradient" else (outside > 0.1)
  for seed in range(3):
    coeffs = 3.0 * jax.random.normal(jax.random.key(seed), (4, basis.shape[1]))
    full = label_fit.residual(target.bias + coeffs @ basis.T, onehot=onehot, target=target)
    seen = label_fit.subspace_residual(coeffs, onehot=onehot, target=target, span=span)
    assert seen.shape == (_N * basis.shape[1] + _N,)
    np.testing.assert_allclose(jnp.sum(seen ** 2) + span.outside, jnp.sum(full ** 2),
                               rtol=1e-4)


def test_fit_certifies_the_true_counts_and_rejects_one_unit_moves():
  _, variables, _, _, grad, true = _case([1, 1, 4, 7], scale=4.0)
  target = label_fit.targets(grad, variables=variables, num_images=4)
  start = label_fit.class_logits(grad, variables=variables)
  fit = jax.jit(lambda c: label_fit.fit_counts(jax.random.key(0), counts=c, target=target,
                                               starts_from=start, num_images=4))
  assert float(fit(true).residual) < 1e-8
  np.testing.assert_allclose(fit(true).scores, true, atol=1e-3)
  moved = [true.at[i].add(-1).at[j].add(1) for i in (1, 4, 7) for j in (0, 1, 5)
           if i != j]
  residuals = [float(fit(c).residual) for c in moved]
  assert min(residuals) > 1e-5, residuals


def test_true_logits_lie_in_the_feature_basis():
  # K dW's row space is the span of the batch's features, so each z_k - b is W V a_k.
  model, variables, x, _, grad, _ = _case([1, 1, 4, 7], scale=4.0)
  basis = label_fit.feature_basis(grad, variables=variables, num_images=4)
  assert basis.shape == (_N, 4)
  features, _ = model.features(variables, x)
  layer = variables["params"][CLASSIFIER]
  centred = (features @ layer["kernel"]).T  # [N, K]
  outside = lambda m: m - basis @ jnp.linalg.lstsq(basis, m)[0]
  assert float(jnp.sum(outside(centred) ** 2) / jnp.sum(centred ** 2)) < 1e-8
  other = jax.random.normal(jax.random.key(5), centred.shape)  # 4 of 10 dimensions
  assert float(jnp.sum(outside(other) ** 2) / jnp.sum(other ** 2)) > 0.1


def test_subspace_fit_certifies_the_true_counts_and_rejects_one_unit_moves():
  _, variables, _, _, grad, true = _case([1, 1, 4, 7], scale=4.0)
  target = label_fit.targets(grad, variables=variables, num_images=4)
  start = label_fit.class_logits(grad, variables=variables)
  basis = label_fit.feature_basis(grad, variables=variables, num_images=4)
  fit = jax.jit(lambda c, n: label_fit.fit_counts(
      jax.random.key(0), counts=c, target=target, starts_from=start, num_images=4,
      basis=basis, iterations=n), static_argnums=1)
  assert float(fit(true, 0).residual) < 1e-8  # the subspace stage alone fits it
  np.testing.assert_allclose(fit(true, 100).scores, true, atol=1e-3)
  moved = [true.at[i].add(-1).at[j].add(1) for i in (1, 4, 7) for j in (0, 1, 5)
           if i != j]
  residuals = [float(fit(c, 100).residual) for c in moved]
  assert min(residuals) > 1e-5, residuals


def test_invalid_candidates_get_an_infinite_residual():
  _, variables, _, _, grad, true = _case([1, 1, 4, 7])
  target = label_fit.targets(grad, variables=variables, num_images=4)
  start = label_fit.class_logits(grad, variables=variables)
  for bad in (true.at[0].add(1), true.at[0].add(-1).at[1].add(1)):
    fit = label_fit.fit_counts(jax.random.key(0), counts=bad, target=target,
                               starts_from=start, num_images=4, iterations=2)
    assert not np.isfinite(float(fit.residual))


@functools.lru_cache(maxsize=1)
def _trained_victim():
  """The LeNet after 800 full-batch SGD steps on a pool of 40 images (4 per class): it
  predicts the pool's labels with confidence 0.90-0.97, like a trained model."""
  model, variables = _victim()
  pool_x = jax.random.uniform(jax.random.key(99), (40, *model.image_shape))
  pool_y = jnp.arange(40) % _N

  def step(v, _):
    g = victim.fedsgd_update(model.apply, v, pool_x, pool_y)
    return {**v, "params": jax.tree.map(lambda a, b: a - 0.5 * b, v["params"], g)}, None

  variables = jax.jit(lambda v: jax.lax.scan(step, v, None, length=800)[0])(variables)
  return model, variables, pool_x


@pytest.mark.parametrize("space,max_unknowns,polish", [
    (labels.FitSpace.SUBSPACE, labels.FIT_MAX_UNKNOWNS, label_fit.POLISH_ITERATIONS),
    (labels.FitSpace.LOGITS, labels.FIT_MAX_UNKNOWNS, label_fit.POLISH_ITERATIONS),
    # K N = 40 > 16 >= K^2: the subspace fit alone, as on a wide head (N = 1000).
    (labels.FitSpace.SUBSPACE, 16, 0)])
def test_fit_recovers_duplicates_on_a_trained_victim_jitted_and_vmapped(
    space, max_unknowns, polish, monkeypatch, heavy_compile_options):
  # On this victim SELECT (geng_bias / ilrg / cluster) got 3 of these 4 count vectors
  # wrong when this test was written: confident, correct predictions hide the counts
  # from the closed forms. The four trials run vmapped under one jit.
  search, polishes = label_fit.search, []
  monkeypatch.setattr(label_fit, "search",
                      lambda *a, **kw: polishes.append(kw["iterations"]) or search(*a, **kw))
  model, variables, pool_x = _trained_victim()
  batches = [[1, 1, 4, 7], [3, 3, 3, 0], [2, 5, 5, 9], [0, 6, 6, 8]]
  index = jnp.array([[c + _N * i for i, c in enumerate(lab)] for lab in batches])
  grads = jax.jit(jax.vmap(lambda i, y: victim.fedsgd_update(  # distinct images of class y
      model.apply, variables, pool_x[i], y)))(index, jnp.asarray(batches))
  truth = [np.bincount(lab, minlength=_N) for lab in batches]
  fn = jax.jit(jax.vmap(lambda k, u: labels.restore(
      k, method=labels.Method.FIT, update=u, features_fn=model.features,
      variables=variables, num_images=4, image_shape=model.image_shape,
      feature_domain=labels.FeatureDomain.UNIT, fit_space=space,
      fit_max_unknowns=max_unknowns).counts), compiler_options=heavy_compile_options)
  got = np.asarray(fn(jax.random.split(jax.random.key(1), len(batches)), grads))
  assert polishes == [polish]
  np.testing.assert_array_equal(got, np.stack(truth))


@pytest.mark.parametrize("space,max_unknowns", [
    (labels.FitSpace.SUBSPACE, 15),  # K^2 = 16 > 15
    (labels.FitSpace.LOGITS, 39)])   # K N = 40 > 39, and no subspace stage to fall back on
def test_fit_hands_over_to_select_where_its_solve_would_be_too_large(space, max_unknowns,
                                                                     monkeypatch):
  monkeypatch.setattr(label_fit, "search", lambda *a, **kw: pytest.fail("search ran"))
  model, variables, _, _, grad, _ = _case([1, 1, 4, 7])
  kwargs = dict(update=grad, features_fn=model.features, variables=variables,
                num_images=4, image_shape=model.image_shape)
  # Jitted: the hand-over makes FIT's program SELECT's, compiled once (the suite's cache).
  fit = jax.jit(lambda k: labels.restore(k, method=labels.Method.FIT, fit_space=space,
                                         fit_max_unknowns=max_unknowns, **kwargs).counts)
  chosen = jax.jit(lambda k: labels.restore(k, method=labels.Method.SELECT, **kwargs).counts)
  np.testing.assert_array_equal(fit(jax.random.key(0)), chosen(jax.random.key(0)))


def test_fit_beyond_half_is_opt_in_and_certifies_duplicates(heavy_compile_options):
  # N/2 < K < N on a confident victim, where SELECT's closed-form scores sit off the
  # integers: FIT is SELECT unless fit_beyond_half, then its search certifies the multiset;
  # a margin no fit can meet hands the answer back to SELECT.
  model, variables, _, _, grad, true = _case([0, 1, 1, 1, 3, 3, 5], scale=4.0)
  kwargs = dict(update=grad, features_fn=model.features, variables=variables,
                num_images=7, image_shape=model.image_shape)

  # The four calls in one jitted program: one compilation instead of four.
  @functools.partial(jax.jit, compiler_options=heavy_compile_options)
  def run(key):
    fit = functools.partial(labels.restore, key, method=labels.Method.FIT, **kwargs)
    return (labels.restore(key, method=labels.Method.SELECT, **kwargs), fit(),
            fit(fit_beyond_half=True), fit(fit_beyond_half=True, fit_margin=1e30))

  chosen, plain, fitted, unmet = run(jax.random.key(0))
  np.testing.assert_array_equal(plain.scores, chosen.scores)
  np.testing.assert_array_equal(unmet.scores, chosen.scores)
  assert float(jnp.max(jnp.abs(chosen.scores - true))) > 1e-3
  np.testing.assert_array_equal(fitted.counts, true)
  np.testing.assert_allclose(fitted.scores, true, atol=1e-4)
  # K >= N: the update's row space is not K-dimensional; SELECT even with the option.
  space = labels.FitSpace.SUBSPACE
  fit_iterations = labels._fit_iterations  # pylint: disable=protected-access
  assert fit_iterations(7, _N, 1024, space, beyond_half=True) is not None
  assert fit_iterations(_N, _N, 1024, space, beyond_half=True) is None
  with pytest.raises(ValueError, match="fit_margin"):
    labels.restore(jax.random.key(0), method=labels.Method.FIT, fit_margin=0.5, **kwargs)
  with pytest.raises(ValueError, match="fit_support_limit"):
    labels.restore(jax.random.key(0), method=labels.Method.FIT, fit_support_limit=-1, **kwargs)


def test_fit_needs_a_bias():
  _, variables, _, _, grad, _ = _case([1, 2])
  no_bias = {**grad, CLASSIFIER: {"kernel": grad[CLASSIFIER]["kernel"]}}
  with pytest.raises(ValueError, match="bias"):
    label_fit.targets(no_bias, variables=variables, num_images=2)


def test_on_support_lists_every_count_vector_on_the_classes():
  assert [counts_lib.support_size(k) for k in (1, 4, 8, 10, 16)] == [1, 3, 35, 126, 6435]
  with pytest.raises(ValueError, match="positive"):
    counts_lib.support_size(0)
  classes = np.zeros(20, bool)
  for flagged, distinct in (([3, 7, 12, 16], 35), ([1, 2], 7), ([5], 1)):
    classes[:] = False
    classes[flagged] = True
    rows = np.asarray(counts_lib.on_support(jnp.asarray(classes), num_images=8))
    assert rows.shape == (35, 20)
    assert len({tuple(r) for r in rows}) == distinct  # C(7, m - 1); the rest repeat
    assert np.all(rows.sum(1) == 8)
    assert np.all(rows[:, classes] >= 1) and np.all(rows[:, ~classes] == 0)
  for flagged in ([], list(range(9))):  # no class, or more classes than images
    classes[:] = False
    classes[flagged] = True
    assert np.all(np.asarray(counts_lib.on_support(jnp.asarray(classes), num_images=8)) == -1)


def test_search_finds_the_truth_on_the_sign_rules_classes_where_sources_miss_it():
  # One source whose rounding puts the duplicate on the wrong class, one hypothesis per
  # source and no refinement: only the vectors on the flagged classes can reach the truth.
  _, variables, _, _, grad, true = _case([1, 1, 4, 7], scale=4.0)
  wrong = true.at[1].add(-1).at[4].add(1)
  search = jax.jit(lambda limit: label_fit.search(
      jax.random.key(0), base_scores=wrong[None].astype(jnp.float32), update=grad,
      variables=variables, num_images=4, per_source=1, rounds=0, minimum=true > 0,
      support_limit=limit), static_argnums=0)
  _, counts, residual, _ = search(0)
  np.testing.assert_array_equal(counts, wrong)
  assert float(residual) > 1e-5
  _, counts, residual, runner_up = search(counts_lib.support_size(4))
  np.testing.assert_array_equal(counts, true)
  assert float(residual) < 1e-8 and float(runner_up) > 1e-5


def test_lenient_hypotheses_have_a_static_shape():
  rows = counts_lib.hypotheses(jnp.array([1.0, 0.0]), num_images=1, num=7, strict=False)
  assert rows.shape == (7, 2)
  with pytest.raises(ValueError, match="only"):
    counts_lib.hypotheses(jnp.array([1.0, 0.0]), num_images=1, num=7)


#: Primitives that XLA:CPU runs as jaxlib's LAPACK kernels (`label_fit.after`).
_LAPACK = {"svd", "qr", "householder_product", "geqrf", "cholesky", "triangular_solve",
           "lu", "eigh", "eig", "schur", "hessenberg", "tridiagonal", "tridiagonal_solve"}


def _sub_jaxprs(eqn):
  return [j for value in eqn.params.values() for j in flop_count.sub_jaxprs(value)]


def _calls_lapack(eqn) -> bool:
  return eqn.primitive.name in _LAPACK or any(
      _calls_lapack(e) for j in _sub_jaxprs(eqn) for e in j.eqns)


def _unordered_lapack_pairs(jaxpr) -> list:
  """Pairs of equations, at any depth, that both run LAPACK with neither using the other's
  output (directly or through others): XLA may run them at once."""
  producer, depends, found = {}, [], []
  for i, eqn in enumerate(jaxpr.eqns):
    deps = set()
    for v in eqn.invars:
      if isinstance(v, jax.extend.core.Var) and v in producer:
        deps |= {producer[v]} | depends[producer[v]]
    depends.append(deps)
    for v in eqn.outvars:
      producer[v] = i
  lapack = [i for i, e in enumerate(jaxpr.eqns) if _calls_lapack(e)]
  found += [(jaxpr.eqns[a].primitive.name, jaxpr.eqns[b].primitive.name)
            for n, a in enumerate(lapack) for b in lapack[n + 1:] if a not in depends[b]]
  for eqn in jaxpr.eqns:
    for sub in _sub_jaxprs(eqn):
      found += _unordered_lapack_pairs(sub)
  return found


def test_after_keeps_values_and_orders_every_lapack_call_of_fit():
  # jaxlib 0.10.2's CPU LAPACK kernels deadlock when XLA runs as many of them at once as
  # its thread pool has threads (`label_fit.after`), so FIT's programs chain them: every
  # two LAPACK calls, at any depth, must be ordered by data, FedSGD and FedAvg, one trial
  # and vmapped over trials (traced, not compiled).
  x = {"a": jnp.arange(3.0), "n": jnp.arange(2)}
  out = label_fit.after(x, jnp.array([jnp.nan, 1.0]), {"i": jnp.inf})
  assert np.asarray(out["a"]).tolist() == [0, 1, 2] and out["n"].dtype == x["n"].dtype
  # The dependency is arithmetic, so XLA keeps it (an optimization barrier it did not keep
  # at run time): the compiled program still computes the zero the second factor reads.
  def two_factors(a, b):
    first = jax.lax.linalg.cholesky(a)
    return first, jax.lax.linalg.cholesky(label_fit.after(b, first))
  eye = jnp.broadcast_to(jnp.eye(4), (3, 4, 4))
  hlo = jax.jit(two_factors).lower(eye, eye).compile().as_text()
  assert "minimum(" in hlo and hlo.count('"lapack_spotrf_ffi"') == 2
  model, variables, _, _, grad, _ = _case([1, 1, 4])
  common = dict(method=labels.Method.FIT, features_fn=model.features, num_images=3,
                image_shape=model.image_shape)
  fedsgd = lambda k, g: labels.restore(k, update=g, variables=variables, **common).counts
  end = {**variables, "params": jax.tree.map(lambda p, g: p - 0.1 * g,
                                             variables["params"], grad)}
  fedavg = lambda k, _: labels.restore_fedavg(k, start=variables, end=end, local_lr=0.1,
                                              local_steps=1, **common).counts
  keys = jax.random.split(jax.random.key(0), 2)
  grads = jax.tree.map(lambda a: jnp.stack([a, a]), grad)
  for fn in (fedsgd, fedavg):
    for jaxpr in (jax.make_jaxpr(fn)(keys[0], grad), jax.make_jaxpr(jax.vmap(fn))(keys, grads)):
      names = {e.primitive.name for e in jaxpr.jaxpr.eqns}
      assert any(_calls_lapack(e) for e in jaxpr.jaxpr.eqns), names
      assert _unordered_lapack_pairs(jaxpr.jaxpr) == []
  # The check can fail: two independent SVDs in one program are unordered.
  two = jax.make_jaxpr(lambda a, b: (jnp.linalg.svd(a)[1], jnp.linalg.svd(b)[1]))(
      jnp.eye(3), jnp.eye(3))
  assert len(_unordered_lapack_pairs(two.jaxpr)) == 1
