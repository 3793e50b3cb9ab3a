import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import attack, metrics, priors, runner, simulators, victim


def _setup(tiny_lenet, batch=2, seed=0):
  model, variables = tiny_lenet
  x = jax.random.uniform(jax.random.key(seed + 10), (batch, *model.image_shape))
  y = jnp.arange(batch, dtype=jnp.int32) % model.num_classes
  target = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  return model, variables, x, y, target


def _attack(tiny_lenet, optimizer=attack.Optimizer.LBFGS, batch=2, **kwargs):
  model, variables, x, y, target = _setup(tiny_lenet, batch)
  a = attack.matching_attack(
      simulate=simulators.fedsgd(model.apply, variables), target=target, batch_size=batch,
      image_shape=model.image_shape,
      optimizer=attack.make_optimizer(optimizer, learning_rate=0.05, iterations=50), **kwargs)
  return a, x, y


@pytest.mark.parametrize("optimizer", list(attack.Optimizer))
def test_step_traces_once_and_lowers_loss(tiny_lenet, optimizer):
  chex.clear_trace_counter()  # the counter is keyed by code object, shared by parameters
  a, x, y = _attack(tiny_lenet, optimizer)
  step = jax.jit(chex.assert_max_traces(a.step, n=1))
  state = a.init(jax.random.key(1), y)
  first = None
  for _ in range(30):
    state, out = step(state)
    first = out["objective"] if first is None else first
  assert int(state.step) == 30
  assert float(out["objective"]) < float(first)
  assert not bool(state.failed)


def test_objective_zero_at_truth(tiny_lenet):
  a, x, y = _attack(tiny_lenet)
  state = a.init(jax.random.key(0), y)._replace(latent=x)
  assert float(a.evaluate(state)) < 1e-10


def test_clip_box_keeps_images_in_range(tiny_lenet):
  a, _, y = _attack(tiny_lenet, attack.Optimizer.ADAM, box=priors.Box.CLIP)
  state = a.init(jax.random.key(2), y)
  step = jax.jit(a.step)
  for _ in range(5):
    state, _ = step(state)
  assert float(state.latent.min()) >= 0 and float(state.latent.max()) <= 1


def test_target_that_does_not_match_the_victim_is_rejected(tiny_lenet):
  model, variables, x, y, target = _setup(tiny_lenet)
  bad = jax.tree.map(lambda t: t, target)
  bad["classifier"] = {"kernel": jnp.zeros((3, 3)), "bias": target["classifier"]["bias"]}
  with pytest.raises(ValueError, match="does not match the victim"):
    attack.matching_attack(simulate=simulators.fedsgd(model.apply, variables), target=bad,
                           batch_size=2, image_shape=model.image_shape,
                           optimizer=attack.make_optimizer(attack.Optimizer.ADAM))


def test_runner_recovers_single_image(tiny_lenet):
  a, x, y = _attack(tiny_lenet, batch=1)
  result = runner.run(a, key=jax.random.key(4), hypotheses=np.asarray(y)[None], restarts=1,
                      iterations=300, progress=False, log_every=100)
  assert result.curve.shape == (300, 1, 1)
  assert float(metrics.psnr(result.images, x)[0]) > 25
