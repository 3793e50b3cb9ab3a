import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import attack, priors, runner, simulators, victim
from jaxinvert.attack import Attack, AttackState


def _fake_attack(batch=1):
  """An attack whose matching loss is the mean of its latent; steps do nothing."""

  def init(key, labels):
    latent = jnp.full((batch, 2, 2, 1), labels[0].astype(jnp.float32)) + jax.random.uniform(
        key, (batch, 2, 2, 1)) * 0.01
    return AttackState(step=jnp.zeros((), jnp.int32), key=jax.random.key_data(key),
                       latent=latent, labels=labels, opt_state=(), objective=jnp.inf,
                       anchor=jnp.zeros(()), failed=jnp.zeros((), bool))

  def step(state):
    return state._replace(step=state.step + 1), {"objective": jnp.mean(state.latent)}

  return Attack(init=init, step=step, images=lambda s: s.latent,
                evaluate=lambda s: jnp.mean(s.latent), needs_anchor=False)


def test_selection_picks_lowest_loss_never_truth():
  hyps = np.array([[5], [2], [7]], np.int32)
  result = runner.run(_fake_attack(), key=jax.random.key(0), hypotheses=hyps, restarts=3,
                      iterations=2, progress=False, log_every=1)
  assert result.hypothesis == 1
  assert result.losses.shape == (3, 3)
  assert result.restart == int(np.argmin(result.losses[1]))
  np.testing.assert_array_equal(result.labels, [2])


def _tiny_attack(tiny_lenet, batch=2, poison_label=None, data_seed=7, **kwargs):
  model, variables = tiny_lenet
  x = jax.random.uniform(jax.random.key(data_seed), (batch, *model.image_shape))
  y = jnp.arange(batch, dtype=jnp.int32) % model.num_classes
  target = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  base = simulators.fedsgd(model.apply, variables)

  def simulate(key, images, labels):
    update = base(key, images, labels)
    if poison_label is None:
      return update
    bad = jnp.any(labels == poison_label)
    return jax.tree.map(lambda u: jnp.where(bad, jnp.nan, u), update)

  opt = kwargs.pop("optimizer", attack.make_optimizer(attack.Optimizer.ADAM, learning_rate=0.05,
                                                      iterations=20))
  a = attack.matching_attack(simulate=simulate, target=target, batch_size=batch,
                             image_shape=model.image_shape, optimizer=opt, **kwargs)
  return a, x, np.asarray(y)


def test_nan_restart_is_masked_and_does_not_poison_others(tiny_lenet):
  a, _, y = _tiny_attack(tiny_lenet, poison_label=4)
  hyps = np.stack([y, np.array([4, 4], np.int32)])
  result = runner.run(a, key=jax.random.key(1), hypotheses=hyps, restarts=2, iterations=6,
                      progress=False, log_every=3, strategy=runner.Strategy.VMAP)
  assert np.all(np.isinf(result.losses[1]))
  assert np.all(np.isfinite(result.losses[0]))
  assert bool(np.all(np.asarray(result.states.failed).reshape(2, 2)[1]))
  assert result.hypothesis == 0
  assert np.all(np.isfinite(result.all_images))
  clean_hyps = np.stack([y, np.array([0, 0], np.int32)])  # same keys, nothing poisoned
  clean = runner.run(a, key=jax.random.key(1), hypotheses=clean_hyps, restarts=2,
                     iterations=6, progress=False, log_every=3, strategy=runner.Strategy.VMAP)
  # The healthy copies are those of a run without the poisoned hypothesis.
  np.testing.assert_allclose(result.all_images[0], clean.all_images[0], atol=1e-6)
  np.testing.assert_allclose(result.losses[0], clean.losses[0], rtol=1e-5)


def test_attacks_on_different_updates_share_one_program(tiny_lenet):
  """The shared update is an argument of the runner's programs, not a constant: a second
  client's attack on the same victim lowers to the same program, which JAX's persistent
  compilation cache then serves."""
  texts, closures, images, attacks = [], [], [], []
  for data_seed, strategy in ((7, runner.Strategy.HOST_LOOP), (8, runner.Strategy.VMAP)):
    a, _, y = _tiny_attack(tiny_lenet, data_seed=data_seed)
    attacks.append(a)
    state = jax.tree.map(lambda leaf: leaf[0],
                         runner.init_states(a, jax.random.key(0), y[None], restarts=1))
    texts.append(jax.jit(a.step).lower(state, a.target).as_text())
    closures.append(jax.jit(a.step).lower(state).as_text())
    step = jax.jit(a.step)  # the closure the runner no longer compiles: the same steps
    manual = state
    for _ in range(3):
      manual, _ = step(manual)
    result = runner.run(a, key=jax.random.key(0), hypotheses=y[None], restarts=1,
                        iterations=3, progress=False, log_every=3, strategy=strategy)
    np.testing.assert_allclose(result.all_images[0, 0], a.images(manual), atol=1e-6)
    np.testing.assert_allclose(result.losses[0, 0], a.evaluate(manual), rtol=1e-5)
    images.append(result.images)
  assert texts[0] == texts[1]
  assert closures[0] != closures[1]  # jitted as a closure, the update is a constant
  # The argument replaces the attack's own target: the first attack stepped on the second
  # attack's update is the second attack.
  first, second = attacks
  moved, _ = jax.jit(first.step)(state, second.target)
  np.testing.assert_allclose(moved.latent, second.step(state)[0].latent, atol=1e-6)
  assert not np.allclose(moved.latent, first.step(state)[0].latent, atol=1e-4)
  np.testing.assert_allclose(first.evaluate(moved, second.target), second.evaluate(moved),
                             rtol=1e-5)
  wrong = jax.tree.map(lambda leaf: leaf[..., :1], second.target)
  with pytest.raises(ValueError, match="does not match the victim's parameters"):
    first.step(state, wrong)
  assert not np.allclose(images[0], images[1])  # two different updates were inverted


@pytest.mark.parametrize("group", [0.0, 0.3])
def test_strategies_agree(tiny_lenet, group):
  a, _, y = _tiny_attack(tiny_lenet, priors=[priors.group_consistency(group),
                                             priors.total_variation(0.01)])
  hyps = np.stack([y, y[::-1]])
  results = {
      s: runner.run(a, key=jax.random.key(3), hypotheses=hyps, restarts=2, iterations=8,
                    progress=False, log_every=4, strategy=s)
      for s in (runner.Strategy.HOST_LOOP, runner.Strategy.VMAP, runner.Strategy.MAP)}
  ref = results[runner.Strategy.HOST_LOOP]
  for s, r in results.items():
    np.testing.assert_allclose(r.all_images, ref.all_images, atol=2e-5, err_msg=str(s))
    np.testing.assert_allclose(r.losses, ref.losses, rtol=1e-3, err_msg=str(s))
    assert (r.hypothesis, r.restart) == (ref.hypothesis, ref.restart)


def test_scan_chunks_equal_single_steps(tiny_lenet):
  a, _, y = _tiny_attack(tiny_lenet)
  kw = dict(key=jax.random.key(3), hypotheses=y[None], restarts=2, iterations=10,
            progress=False, log_every=5, strategy=runner.Strategy.VMAP)
  one = runner.run(a, steps_per_call=1, **kw)
  fused = runner.run(a, steps_per_call=5, **kw)
  np.testing.assert_allclose(one.all_images, fused.all_images, atol=1e-5)
  assert fused.curve.shape == (10, 1, 2)
  with pytest.raises(ValueError, match="steps_per_call must be >= 1, got 0"):
    runner.run(a, steps_per_call=0, **kw)


@pytest.mark.parametrize("optimizer", [attack.Optimizer.ADAM, attack.Optimizer.LBFGS])
def test_resume_is_bit_identical(tiny_lenet, tmp_path, optimizer):
  a, _, y = _tiny_attack(tiny_lenet, optimizer=attack.make_optimizer(
      optimizer, learning_rate=0.05, iterations=12))
  kw = dict(key=jax.random.key(5), hypotheses=y[None], restarts=2, progress=False,
            log_every=4, strategy=runner.Strategy.HOST_LOOP)
  full = runner.run(a, iterations=12, **kw)
  ckpt = str(tmp_path / "ckpt")
  first = runner.run(a, iterations=8, checkpoint_dir=ckpt, checkpoint_every=4, **kw)
  resumed = runner.run(a, iterations=12, checkpoint_dir=ckpt, checkpoint_every=4, **kw)
  np.testing.assert_array_equal(resumed.all_images, full.all_images)
  np.testing.assert_array_equal(resumed.curve, full.curve)
  assert resumed.steps == 12
  assert (full.resumed_from, first.resumed_from, resumed.resumed_from) == (0, 0, 8)


def test_group_anchor_is_mean_of_healthy_restarts(tiny_lenet):
  a, _, y = _tiny_attack(tiny_lenet, priors=[priors.group_consistency(1.0)])
  states = runner.init_states(a, jax.random.key(0), np.stack([y, y]), restarts=3)
  states = states._replace(failed=states.failed.at[2].set(True))
  anchored = runner._with_anchor(a, states, restarts=3)  # pylint: disable=protected-access
  images = np.asarray(jax.vmap(a.images)(states)).reshape(2, 3, *y.shape, 8, 8, 3)
  # copy 2 (hypothesis 0, restart 2) failed: hypothesis 0's anchor averages restarts 0, 1
  np.testing.assert_allclose(anchored.anchor[0], images[0, :2].mean(0), atol=1e-6)
  np.testing.assert_allclose(anchored.anchor[2], images[0, :2].mean(0), atol=1e-6)
  np.testing.assert_allclose(anchored.anchor[3], images[1].mean(0), atol=1e-6)


def test_group_consistency_pulls_restarts_together(tiny_lenet):
  """The spread of the restarts around their mean shrinks as the group weight grows."""

  def spread(weight):
    a, _, y = _tiny_attack(tiny_lenet, priors=[priors.group_consistency(weight)])
    result = runner.run(a, key=jax.random.key(3), hypotheses=y[None], restarts=3,
                        iterations=20, progress=False, log_every=10,
                        strategy=runner.Strategy.VMAP)
    images = np.asarray(result.all_images)[0]  # [restarts, B, H, W, C]
    return float(np.mean(np.abs(images - images.mean(axis=0))))

  # Adam moves each pixel by about its step (0.05) per iteration, so the spread stops
  # shrinking near that scale once the pull dominates (weight >= 1 here).
  free, weak, pulled = spread(0.0), spread(0.1), spread(1.0)
  assert weak < 0.6 * free, (free, weak)
  assert pulled < weak and pulled < 0.35 * free, (free, weak, pulled)


def test_bad_runner_arguments(tiny_lenet):
  a, _, y = _tiny_attack(tiny_lenet)
  with pytest.raises(ValueError, match="restarts must be positive"):
    runner.run(a, key=jax.random.key(0), hypotheses=y[None], restarts=-1, iterations=1,
               progress=False)
  with pytest.raises(ValueError, match="hypotheses must be"):
    runner.run(a, key=jax.random.key(0), hypotheses=y, restarts=1, iterations=1,
               progress=False)
  with pytest.raises(ValueError, match="checkpoint_every"):
    runner.run(a, key=jax.random.key(0), hypotheses=y[None], iterations=1, log_every=4,
               checkpoint_every=6, checkpoint_dir="/tmp/x", progress=False)


def test_default_steps_per_call_per_backend():
  assert runner.default_steps_per_call("cpu") == 1
  assert runner.default_steps_per_call("gpu") == 1
  assert runner.default_steps_per_call("tpu") == 25


def test_default_strategy_per_backend():
  assert runner.default_strategy("cpu", 1) == runner.Strategy.HOST_LOOP
  assert runner.default_strategy("gpu", 1) == runner.Strategy.VMAP
  assert runner.default_strategy("tpu", 8) == runner.Strategy.SHARDED


def test_label_hypotheses_out_of_range_are_rejected(tiny_lenet):
  """Under jit a label >= N would be an all-zero one-hot row: the runner refuses it."""
  a, _, y = _tiny_attack(tiny_lenet)
  assert a.num_classes == 5  # read from the shared update's last layer
  for bad in ([0, 5], [-1, 2]):
    with pytest.raises(ValueError, match=r"out of range: they span .* lie in \[0, 5\)"):
      runner.run(a, key=jax.random.key(0), hypotheses=np.array([y, bad]), iterations=1,
                 progress=False)
  # The largest valid label passes; an explicit num_classes overrides the update's.
  runner.init_states(a, jax.random.key(0), np.array([[4, 4]]), 1)
  narrow, _, _ = _tiny_attack(tiny_lenet, num_classes=3)
  assert narrow.num_classes == 3
  with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
    runner.init_states(narrow, jax.random.key(0), np.array([[4, 4]]), 1)
  # An attack that does not know its classes still refuses negative labels.
  assert _fake_attack().num_classes is None
  with pytest.raises(ValueError, match="out of range"):
    runner.init_states(_fake_attack(), jax.random.key(0), np.array([[-2]]), 1)


def test_classes_of_reads_the_last_layer_of_gradients_and_weights(tiny_lenet):
  model, variables = tiny_lenet
  params = variables["params"]
  assert attack.classes_of(params) == 5
  assert attack.classes_of({"classifier": {"kernel": jnp.zeros((7, 9))}}) == 9
  assert attack.classes_of({"dense": {"kernel": jnp.zeros((7, 9))}}) is None
  assert attack.classes_of(jnp.zeros(3)) is None
