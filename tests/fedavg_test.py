import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import attack, objectives, simulators, victim

KW = dict(local_epochs=2, local_batch_size=2, local_lr=0.1)


def _setup(tiny_lenet, shuffle_key=None):
  model, variables = tiny_lenet
  x = jax.random.uniform(jax.random.key(3), (4, *model.image_shape))
  y = jnp.array([0, 1, 1, 3], jnp.int32)
  order = victim.epoch_orders(shuffle_key, 4, local_epochs=2)
  new = victim.fedavg_update(model.apply, variables, x, y, order=order, **KW)
  return model, variables, x, y, order, victim.weight_delta(variables, new)


@pytest.mark.parametrize("shuffled", [False, True])
def test_unroll_objective_zero_at_truth_with_true_order(tiny_lenet, shuffled):
  model, variables, x, y, order, delta = _setup(
      tiny_lenet, jax.random.key(9) if shuffled else None)
  simulate = simulators.fedavg_unroll(model.apply, variables, known_order=order, **KW)
  loss = objectives.squared_l2(simulate(None, x, y), delta)
  assert float(loss) == 0.0
  other = jax.random.uniform(jax.random.key(4), x.shape)
  assert float(objectives.squared_l2(simulate(None, other, y), delta)) > 0


def test_random_and_average_orders_are_stochastic_and_finite(tiny_lenet):
  model, variables, x, y, order, delta = _setup(tiny_lenet)
  for assumption in (simulators.OrderAssumption.RANDOM, simulators.OrderAssumption.AVERAGE):
    simulate = simulators.fedavg_unroll(model.apply, variables, order=assumption,
                                        order_samples=3, **KW)
    a = simulate(jax.random.key(0), x, y)
    b = simulate(jax.random.key(1), x, y)
    assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(a))
    assert not np.allclose(a["classifier"]["kernel"], b["classifier"]["kernel"])


def test_unroll_gradient_matches_finite_differences(tiny_lenet):
  model, variables, x, y, order, delta = _setup(tiny_lenet)
  with jax.enable_x64(True):
    v64 = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
    d64 = jax.tree.map(lambda a: a.astype(jnp.float64) * 1.1, delta)
    simulate = simulators.fedavg_unroll(model.apply, v64, known_order=order, **KW)
    loss = jax.jit(lambda z: objectives.squared_l2(simulate(None, z, y), d64))
    z = jax.random.uniform(jax.random.key(5), x.shape, jnp.float64)
    d = jax.random.normal(jax.random.key(6), x.shape, jnp.float64)
    analytic = jnp.vdot(jax.jit(jax.grad(loss))(z), d)
    numeric = (loss(z + 1e-5 * d) - loss(z - 1e-5 * d)) / 2e-5
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_remat_and_plain_unroll_agree(tiny_lenet):
  model, variables, x, y, order, delta = _setup(tiny_lenet)
  z = jax.random.uniform(jax.random.key(5), x.shape)
  grads = []
  for remat in (False, True):
    simulate = simulators.fedavg_unroll(model.apply, variables, known_order=order,
                                        remat=remat, **KW)
    grads.append(jax.jit(jax.grad(lambda a: objectives.squared_l2(simulate(None, a, y),
                                                                  delta)))(z))
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-9)


def test_update_not_matching_victim_is_rejected(tiny_lenet):
  model, variables, x, y, order, delta = _setup(tiny_lenet)
  simulate = simulators.fedavg_unroll(model.apply, variables, known_order=order, **KW)
  bad = {**delta, "classifier": {"kernel": jnp.zeros((7, 5)),
                                 "bias": delta["classifier"]["bias"]}}
  with pytest.raises(ValueError, match="does not match the victim"):
    attack.matching_attack(simulate=simulate, target=bad, batch_size=4,
                           image_shape=model.image_shape,
                           optimizer=attack.make_optimizer(attack.Optimizer.ADAM))


def test_local_batch_size_not_dividing_batch_is_rejected(tiny_lenet):
  model, variables, x, y, order, delta = _setup(tiny_lenet)
  simulate = simulators.fedavg_unroll(model.apply, variables, local_epochs=1,
                                      local_batch_size=3, local_lr=0.1)
  with pytest.raises(ValueError, match="not a multiple of local_batch_size 3"):
    attack.matching_attack(simulate=simulate, target=delta, batch_size=4,
                           image_shape=model.image_shape,
                           optimizer=attack.make_optimizer(attack.Optimizer.ADAM))


def test_numpy_batch_eagerly_and_bad_learning_rate(tiny_lenet):
  """A batch as data.sample_batch gives it (NumPy arrays), called eagerly, as in a
  notebook: the same weights as the traced call (NumPy arrays cannot be indexed by the
  scan's traced indices, which used to raise TracerArrayConversionError)."""
  model, variables, x, y, order, _ = _setup(tiny_lenet)
  eager = victim.fedavg_update(model.apply, variables, np.asarray(x), np.asarray(y), **KW)
  traced = jax.jit(lambda a, b: victim.fedavg_update(model.apply, variables, a, b, **KW))(x, y)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(traced)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for lr in (0.0, -0.1):
    with pytest.raises(ValueError, match="local_lr must be positive"):
      victim.fedavg_update(model.apply, variables, x, y, **{**KW, "local_lr": lr})


def test_approx_target_is_average_gradient(tiny_lenet):
  model, variables, x, y, order, delta = _setup(tiny_lenet)
  target = simulators.fedavg_approx_target(delta, local_lr=0.1, steps=4)
  np.testing.assert_allclose(target["classifier"]["bias"],
                             -delta["classifier"]["bias"] / 0.4, rtol=1e-6)
  # One step of FedAvg: the approximation is exact.
  new = victim.fedavg_update(model.apply, variables, x, y, local_epochs=1,
                             local_batch_size=4, local_lr=0.1)
  grad = victim.fedsgd_update(model.apply, variables, x, y)
  approx = simulators.fedavg_approx_target(victim.weight_delta(variables, new), local_lr=0.1,
                                           steps=1)
  np.testing.assert_allclose(approx["classifier"]["kernel"], grad["classifier"]["kernel"],
                             rtol=1e-4, atol=1e-6)


def _step_multisets(placement, order, local_batch_size):
  steps = np.asarray(order).reshape(-1, local_batch_size)
  return tuple(map(tuple, np.sort(np.asarray(placement)[steps], axis=1)))


@pytest.mark.parametrize("labels,shuffle,expected", [
    ([4, 0, 9, 3], False, 6),   # 4!/(2!2!): which pair goes first, same order both epochs
    ([1, 2, 2, 1], False, 3),   # {11|22}, {12|12}, {22|11}
    ([4, 0, 9, 3], True, None),
])
def test_label_arrangements_one_per_mini_batch_assignment(labels, shuffle, expected):
  order = np.asarray(victim.epoch_orders(jax.random.key(9) if shuffle else None, 4,
                                         local_epochs=2))
  placements = simulators.label_arrangements(labels, order=order, local_batch_size=2,
                                             max_num=1000)
  if expected is not None:
    assert len(placements) == expected
  np.testing.assert_array_equal(placements[0], np.sort(labels))
  keys = [_step_multisets(p, order, 2) for p in placements]
  assert len(set(keys)) == len(keys)                       # distinct for the simulation
  for p in placements:
    np.testing.assert_array_equal(np.sort(p), np.sort(labels))
  # Every arrangement of the multiset is equivalent to one listed.
  for perm in itertools.permutations(labels):
    assert _step_multisets(perm, order, 2) in keys
  assert len(simulators.label_arrangements(labels, order=order, local_batch_size=2,
                                           max_num=2)) == 2


def test_label_arrangements_reject_bad_input():
  order = victim.epoch_orders(None, 4, local_epochs=1)
  with pytest.raises(ValueError, match="order must be"):
    simulators.label_arrangements([0, 1, 2], order=order, local_batch_size=1, max_num=4)
  with pytest.raises(ValueError, match="not a multiple of local_batch_size 3"):
    simulators.label_arrangements([0, 1, 2, 3], order=order, local_batch_size=3, max_num=4)
  with pytest.raises(ValueError, match="local_batch_size must be positive"):
    simulators.label_arrangements([0, 1, 2, 3], order=order, local_batch_size=0, max_num=4)
  with pytest.raises(ValueError, match="max_num"):
    simulators.label_arrangements([0, 1, 2, 3], order=order, local_batch_size=2, max_num=0)


def test_true_placement_matches_and_sorted_one_does_not(tiny_lenet):
  """Why restored FedAvg labels need placing: the counts are right, yet the sorted
  placement simulates another local training, while the listed placement with the
  client's mini-batches matches the update (images put where their labels are)."""
  model, variables = tiny_lenet
  x = jax.random.uniform(jax.random.key(3), (4, *model.image_shape))
  y = np.array([3, 0, 1, 0], np.int32)             # mini-batches {3, 0} and {1, 0}
  order = victim.epoch_orders(None, 4, local_epochs=2)
  delta = victim.weight_delta(variables, victim.fedavg_update(
      model.apply, variables, x, jnp.asarray(y), order=order, **KW))
  simulate = simulators.fedavg_unroll(model.apply, variables, known_order=order, **KW)

  def loss(labels):
    # Each image goes to a position of its own mini-batch holding its label.
    perm = np.empty(4, int)
    for step in (np.arange(2), np.arange(2, 4)):
      perm[step] = step[np.argsort(y[step], kind="stable")][np.argsort(
          np.argsort(labels[step], kind="stable"), kind="stable")]
    return float(objectives.squared_l2(simulate(None, x[perm], jnp.asarray(labels)), delta))

  placements = simulators.label_arrangements(y, order=order, local_batch_size=2, max_num=10)
  client = [p for p in placements if _step_multisets(p, order, 2) == _step_multisets(y, order, 2)]
  assert len(client) == 1
  assert loss(client[0]) < 1e-12
  sorted_labels = np.sort(y)                       # {0, 0} and {1, 3}: not the client's
  assert not np.array_equal(client[0], sorted_labels)
  assert loss(sorted_labels) > 1e3 * max(loss(client[0]), 1e-12)
