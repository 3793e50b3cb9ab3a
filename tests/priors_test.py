import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import models, priors


def _fd_check(fn, x, eps=1e-4, rtol=2e-3, seed=0):
  """Directional finite difference of a scalar function, float64."""
  with jax.enable_x64(True):
    x = jnp.asarray(x, jnp.float64)
    d = jax.random.normal(jax.random.key(seed), x.shape, jnp.float64)
    analytic = jnp.vdot(jax.grad(fn)(x), d)
    numeric = (fn(x + eps * d) - fn(x - eps * d)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=1e-9)


def test_tv_hand_computed():
  x = np.zeros((1, 2, 2, 1), np.float32)
  x[0, 0, 0, 0] = 1.0
  # dy: [[-1, 0]] -> mean |dy| = 1/2 ; dx: [[-1], [0]] -> 1/2
  assert float(priors.tv_value(jnp.asarray(x), kind=priors.TV.ANISOTROPIC)) == pytest.approx(1.0)
  # isotropic on the 1x1 interior: sqrt(1 + 1)
  assert float(priors.tv_value(jnp.asarray(x), kind=priors.TV.ISOTROPIC)) == pytest.approx(
      np.sqrt(2.0), rel=1e-4)
  assert float(priors.tv_value(jnp.ones((2, 4, 4, 3)))) == 0.0


@pytest.mark.parametrize("kind", list(priors.TV))
def test_tv_gradient_finite_differences(kind):
  x = jax.random.uniform(jax.random.key(1), (2, 5, 5, 3))
  _fd_check(lambda z: priors.tv_value(z, kind=kind), x)


def test_group_consistency_value_and_gradient():
  x = jnp.ones((1, 2, 2, 1))
  anchor = jnp.zeros((1, 2, 2, 1))
  assert float(priors.group_consistency_value(x, anchor)) == 1.0
  a = jax.random.uniform(jax.random.key(2), (2, 3, 3, 3))
  _fd_check(lambda z: priors.group_consistency_value(z, a), jax.random.uniform(
      jax.random.key(3), (2, 3, 3, 3)))


def test_bn_statistics_recovers_batch_moments_and_gradient():
  model = models.get_model("convnet", num_classes=3, width=2)
  variables = jax.jit(model.init)(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  stats = jax.jit(lambda v, a: priors.batch_statistics(model.apply, v, a))(variables, x)
  # first BatchNorm sees conv0's output: compare to its batch moments
  conv = jax.jit(lambda v, a: model.module.apply(
      v, a, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda mdl, _: mdl.name == "conv0")[1]["intermediates"])(variables, x)
  h = conv["conv0"]["__call__"][0]
  np.testing.assert_allclose(stats["bn0"]["mean"], h.mean((0, 1, 2)), rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(stats["bn0"]["var"], h.var((0, 1, 2)), rtol=1e-3, atol=1e-5)
  prior = priors.bn_statistics(1.0, apply_fn=model.apply, variables=variables,
                               target_stats=stats)
  assert float(jax.jit(prior.fn)(x, None)) < 1e-2  # its own statistics match
  with jax.enable_x64(False):
    g = jax.jit(jax.grad(lambda a: prior.fn(a, None)))(jax.random.uniform(
        jax.random.key(3), (4, 32, 32, 3)))
  assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0


def test_bn_prior_needs_batchnorm():
  model = models.get_model("lenet", num_classes=3, image_size=8)
  variables = model.init(jax.random.key(0))
  with pytest.raises(ValueError, match="needs a victim with BatchNorm"):
    priors.bn_statistics(1.0, apply_fn=model.apply, variables=variables)


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf")])
def test_prior_weights_must_be_finite_and_nonnegative(weight):
  model = models.get_model("convnet", num_classes=3, width=2)
  variables = jax.jit(model.init)(jax.random.key(0))
  makers = [lambda w: priors.total_variation(w), priors.group_consistency,
            lambda w: priors.bn_statistics(w, apply_fn=model.apply, variables=variables)]
  for make in makers:
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
      make(weight)
    assert make(0.5).weight == 0.5 and make(0).weight == 0.0


@pytest.mark.parametrize("box", list(priors.Box))
def test_box_round_trip(box):
  images = jax.random.uniform(jax.random.key(4), (2, 3, 3, 3), minval=0.01, maxval=0.99)
  np.testing.assert_allclose(box.to_images(box.from_images(images)), images, atol=1e-5)
  projected = box.project(jnp.full((1, 1, 1, 1), 2.0))
  if box == priors.Box.CLIP:
    assert float(projected.max()) == 1.0
