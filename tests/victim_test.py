import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import models, victim


def _tiny(num_classes=3):
  model = models.get_model("lenet", num_classes=num_classes, image_size=8, width=2)
  return model, model.init(jax.random.key(0))


def _batch(n=4, size=8, classes=3, seed=1):
  x = jax.random.uniform(jax.random.key(seed), (n, size, size, 3))
  y = jnp.arange(n, dtype=jnp.int32) % classes
  return x, y


def test_fedsgd_matches_finite_differences_float64():
  with jax.enable_x64(True):
    model, variables = _tiny()
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    x, y = _batch()
    x = x.astype(jnp.float64)
    grad = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
    flat, unravel = jax.flatten_util.ravel_pytree(variables["params"])
    gflat, _ = jax.flatten_util.ravel_pytree(grad)

    @jax.jit
    def loss(v):
      logits, _ = model.apply({"params": unravel(v)}, x)
      return victim.mean_cross_entropy(logits, y)

    rng = np.random.default_rng(0)
    for i in rng.choice(flat.size, 12, replace=False):
      e = jnp.zeros_like(flat).at[i].set(1e-6)
      fd = (loss(flat + e) - loss(flat - e)) / 2e-6
      np.testing.assert_allclose(gflat[i], fd, rtol=1e-5, atol=1e-9)


def test_fedavg_one_step_equals_sgd_step():
  model, variables = _tiny()
  x, y = _batch()
  grad = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  new = jax.jit(lambda v, a, b: victim.fedavg_update(
      model.apply, v, a, b, local_epochs=1, local_batch_size=4, local_lr=0.05))(variables, x, y)
  expected = jax.tree.map(lambda p, g: p - 0.05 * g, variables["params"], grad)
  chex.assert_trees_all_close(new["params"], expected, rtol=1e-6, atol=1e-7)


def test_fedavg_carries_batchnorm_statistics():
  model = models.get_model("convnet", num_classes=3, width=2)
  variables = model.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  y = jnp.array([0, 1, 2, 0])
  new = jax.jit(lambda v, a, b: victim.fedavg_update(
      model.apply, v, a, b, local_epochs=2, local_batch_size=2, local_lr=0.1))(variables, x, y)
  mean0 = variables["batch_stats"]["bn0"]["mean"]
  mean1 = new["batch_stats"]["bn0"]["mean"]
  assert not np.allclose(mean0, mean1)


def test_fedavg_gradient_to_images_matches_finite_differences():
  with jax.enable_x64(True):
    model, variables = _tiny()
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    x, y = _batch()
    x = x.astype(jnp.float64)
    direction = jax.random.normal(jax.random.key(5), x.shape, jnp.float64)

    @jax.jit
    def f(images):
      new = victim.fedavg_update(model.apply, variables, images, y, local_epochs=2,
                                 local_batch_size=2, local_lr=0.5)
      return sum(jnp.sum(jnp.sin(l)) for l in jax.tree.leaves(new["params"]))

    analytic = jnp.vdot(jax.jit(jax.grad(f))(x), direction)
    eps = 1e-5
    numeric = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_fedavg_shuffles_by_key_and_in_order_without():
  model, variables = _tiny()
  x, y = _batch()
  run = jax.jit(lambda order, key: victim.fedavg_update(
      model.apply, variables, x, y, local_epochs=2, local_batch_size=2, local_lr=0.1,
      order=order, key=key))
  in_order = run(None, None)
  explicit = run(jnp.tile(jnp.arange(4), (2, 1)), None)
  chex.assert_trees_all_close(in_order, explicit)
  a, b = run(None, jax.random.key(3)), run(None, jax.random.key(3))
  chex.assert_trees_all_equal(a, b)
  shuffled = run(None, jax.random.key(4))
  assert not np.allclose(shuffled["params"]["classifier"]["kernel"],
                         in_order["params"]["classifier"]["kernel"])
  orders = victim.epoch_orders(jax.random.key(3), 4, local_epochs=2)
  assert sorted(np.asarray(orders[0]).tolist()) == [0, 1, 2, 3]


def test_eager_equals_jit():
  model, variables = _tiny()
  x, y = _batch()
  eager = victim.fedsgd_update(model.apply, variables, x, y)
  jitted = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-7)
  kwargs = dict(local_epochs=2, local_batch_size=2, local_lr=0.1)
  eager = victim.fedavg_update(model.apply, variables, x, y, **kwargs)
  jitted = jax.jit(lambda v, a, b: victim.fedavg_update(model.apply, v, a, b, **kwargs))(
      variables, x, y)
  chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [dict(remat=True), dict(unroll=True), dict(unroll=2)])
def test_remat_and_unroll_give_same_values(options):
  model, variables = _tiny()
  x, y = _batch()
  kwargs = dict(local_epochs=2, local_batch_size=2, local_lr=0.1)
  f = lambda extra: lambda im: jnp.sum(jax.tree.leaves(victim.fedavg_update(
      model.apply, variables, im, y, **kwargs, **extra)["params"])[0] ** 2)
  chex.assert_trees_all_close(jax.jit(jax.grad(f({})))(x), jax.jit(jax.grad(f(options)))(x),
                              rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("case,match", [
    ("labels_range", "labels out of range"),
    ("labels_negative", "labels out of range"),
    ("image_shape", "do not fit the model"),
    ("empty", "empty batch"),
    ("labels_shape", "labels must have shape"),
    ("not_nhwc", "NHWC"),
])
def test_fedsgd_bad_input(case, match):
  model, variables = _tiny()
  x, y = _batch()
  if case == "labels_range":
    y = y.at[0].set(3)
  elif case == "labels_negative":
    y = y.at[0].set(-1)
  elif case == "image_shape":
    x = jnp.zeros((4, 12, 12, 3))
  elif case == "empty":
    x, y = x[:0], y[:0]
  elif case == "labels_shape":
    y = y[:3]
  elif case == "not_nhwc":
    x = x[..., 0]
  with pytest.raises(ValueError, match=match):
    victim.fedsgd_update(model.apply, variables, x, y)
  with pytest.raises(ValueError, match=match):
    victim.fedavg_update(model.apply, variables, x, y, local_epochs=1,
                         local_batch_size=max(1, x.shape[0]), local_lr=0.1)


def test_fedavg_bad_local_settings():
  model, variables = _tiny()
  x, y = _batch()
  with pytest.raises(ValueError, match="not a multiple of local_batch_size 3"):
    victim.fedavg_update(model.apply, variables, x, y, local_epochs=1, local_batch_size=3,
                         local_lr=0.1)
  with pytest.raises(ValueError, match="local_epochs"):
    victim.fedavg_update(model.apply, variables, x, y, local_epochs=0, local_batch_size=2,
                         local_lr=0.1)
  with pytest.raises(ValueError, match="not both"):
    victim.fedavg_update(model.apply, variables, x, y, local_epochs=1, local_batch_size=2,
                         local_lr=0.1, key=jax.random.key(0), order=jnp.zeros((1, 4), int))
