import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import objectives
from jaxinvert.objectives import Distance


def test_l2_hand_computed():
  a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([0.0])}
  b = {"w": jnp.array([0.0, 0.0]), "b": jnp.array([3.0])}
  assert float(objectives.squared_l2(a, b)) == 1 + 4 + 9
  weights = {"w": 2.0, "b": 0.0}
  assert float(objectives.squared_l2(a, b, layer_weights=weights)) == 10.0


def test_cosine_hand_computed():
  a = {"w": jnp.array([1.0, 0.0])}
  b = {"w": jnp.array([1.0, 1.0])}
  assert float(objectives.cosine(a, b)) == pytest.approx(1 - 1 / np.sqrt(2), rel=1e-5)
  assert float(objectives.cosine(a, {"w": jnp.array([3.0, 0.0])})) == pytest.approx(0, abs=1e-6)
  assert float(objectives.cosine(a, {"w": jnp.array([-1.0, 0.0])})) == pytest.approx(2.0)


@pytest.mark.parametrize("distance", list(Distance))
def test_gradient_finite_differences(distance):
  with jax.enable_x64(True):
    t = {"a": jax.random.normal(jax.random.key(0), (3, 4), jnp.float64),
         "b": jax.random.normal(jax.random.key(1), (5,), jnp.float64)}
    s = jax.tree.map(lambda x: x + 0.3, t)
    f = lambda s: objectives.update_distance(s, t, distance=distance)
    d = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape, jnp.float64), s)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(jax.grad(f)(s)),
                                                   jax.tree.leaves(d)))
    eps = 1e-6
    numeric = (f(jax.tree.map(lambda x, v: x + eps * v, s, d))
               - f(jax.tree.map(lambda x, v: x - eps * v, s, d))) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_mismatched_update_rejected():
  with pytest.raises(ValueError, match="does not match"):
    objectives.check_same_structure({"a": jnp.zeros(3)}, {"a": jnp.zeros(4)})
  with pytest.raises(ValueError, match="does not match"):
    objectives.check_same_structure({"a": jnp.zeros(3)}, {"b": jnp.zeros(3)})
