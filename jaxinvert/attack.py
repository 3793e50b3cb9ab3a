"""Update-matching attacks as optax-style ``init``/``step`` pairs, for one restart.

An attack optimises dummy images so that the update they produce on the victim
matches the update the client shared (DLG, Zhu et al., 2019; Inverting Gradients,
Geiping et al., 2020; Geng et al., arXiv 2110.09074):

    min_x  D(simulate(x, y), shared) + sum_i w_i R_i(x)

with labels y fixed to one hypothesis (Geng et al. restore them first). Everything
here is written for one restart; `jaxinvert.runner` vmaps/maps/loops it over
restarts x label hypotheses and picks the answer by the lowest matching loss.

``simulate(key, images, labels) -> update`` is any function: `victim.fedsgd_update`
for FedSGD, the unrolled `victim.fedavg_update` for FedAvg. ``key`` is folded with
the step (`jax.random.fold_in`), so a resumed run draws the same randomness.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxinvert import objectives
from jaxinvert.counts import classifier_grads
from jaxinvert.priors import Box, Prior
from jaxinvert.types import PyTree

Simulate = Callable[[jax.Array, jax.Array, jax.Array], PyTree]


class Optimizer(enum.Enum):
  """Image optimisers of the literature."""

  LBFGS = "lbfgs"              # DLG, Geng et al.: L-BFGS with a zoom line search
  ADAM = "adam"                # plain Adam with Geiping et al.'s step schedule
  SIGNED_ADAM = "signed_adam"  # Adam on the sign of the gradient (Geiping et al.)


class InitDist(enum.Enum):
  """Distribution of the dummy images at the start."""

  UNIFORM = "uniform"    # U(0, 1), Geng et al.'s code and DLG
  GAUSSIAN = "gaussian"  # N(0.5, 0.25^2) clipped to [0, 1]


def step_schedule(learning_rate: float, iterations: int) -> optax.Schedule:
  """Geiping et al.'s schedule: x0.1 at 3/8, 5/8 and 7/8 of the iterations."""
  boundaries = {int(iterations * f): 0.1 for f in (3 / 8, 5 / 8, 7 / 8) if int(iterations * f)}
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def make_optimizer(kind: Optimizer, *, learning_rate: float = 0.1, iterations: int = 1000,
                   lbfgs_memory: int = 10) -> optax.GradientTransformationExtraArgs:
  """The optax transformation behind an `Optimizer`.

  Args:
    kind: which optimiser.
    learning_rate: Adam's initial rate (ignored by L-BFGS, which line-searches).
    iterations: the budget, for the step schedule.
    lbfgs_memory: L-BFGS history length.
  """
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate}")
  if kind == Optimizer.LBFGS:
    return optax.lbfgs(memory_size=lbfgs_memory)
  schedule = step_schedule(learning_rate, iterations)
  if kind == Optimizer.ADAM:
    return optax.with_extra_args_support(optax.adam(schedule))
  if kind == Optimizer.SIGNED_ADAM:
    return optax.with_extra_args_support(optax.chain(optax.scale_by_sign(),
                                                     optax.adam(schedule)))
  raise ValueError(f"unknown optimizer {kind!r}")


def _strong(tree: PyTree) -> PyTree:
  """Drops weak types (optax initialises some counters from Python scalars) so the
  state's avals never change across steps and a jitted step traces exactly once."""
  return jax.tree.map(lambda x: jax.lax.convert_element_type(x, jnp.result_type(x)), tree)


class AttackState(NamedTuple):
  """Everything that changes during one restart of an attack (a pytree).

  Attributes:
    step: iterations done, int32.
    key: raw key data (uint32) of this restart; step keys are ``fold_in(key, step)``.
    latent: the optimised variable; images are ``box.to_images(latent)``.
    labels: ``[B]`` int32, this restart's label hypothesis.
    opt_state: the optax state.
    objective: the objective (matching + priors) at the last evaluation; +inf after
      a failure.
    anchor: group-consistency anchor (images), refreshed by the runner; a scalar
      0 when no prior uses it.
    failed: a non-finite value was met; the restart is frozen since then.
  """

  step: jax.Array
  key: jax.Array
  latent: jax.Array
  labels: jax.Array
  opt_state: Any
  objective: jax.Array
  anchor: jax.Array
  failed: jax.Array


class Attack(NamedTuple):
  """Pure functions of one restart.

  Attributes:
    init: ``(key, labels) -> AttackState``.
    step: ``(AttackState[, target]) -> (AttackState, {'objective': scalar})``.
    images: ``AttackState -> images`` in [0, 1].
    evaluate: ``(AttackState[, target]) -> matching loss`` of the current images (+inf if failed);
      restarts are ranked by it, never by the ground truth.
    needs_anchor: a prior pulls restarts together (the runner refreshes ``anchor``).
    num_classes: labels must lie in ``[0, num_classes)``; None = not known. The runner
      checks its label hypotheses against it: under `jit` a label out of range would
      become an all-zero one-hot row, a silently different objective.
    target: the shared update the attack inverts, or None. Where it is set, ``step``
      and ``evaluate`` take it as an optional second argument (None: this one), and the
      runner passes it to its compiled programs as an argument: jitted as part of a
      closure it would be a constant of the program, so every new update (another batch
      or client of the same victim) would compile a new program, and JAX's persistent
      compilation cache, whose key holds the constants, would never serve it. A
      ``step`` or ``evaluate`` put in its place must take the target too.
  """

  init: Callable[[jax.Array, jax.Array], AttackState]
  step: Callable[..., tuple[AttackState, dict[str, jax.Array]]]
  images: Callable[[AttackState], jax.Array]
  evaluate: Callable[..., jax.Array]
  needs_anchor: bool
  num_classes: int | None = None
  target: PyTree | None = None


def classes_of(update: PyTree) -> int | None:
  """Number of classes of an update (gradient or weights) whose last layer is
  ``update[CLASSIFIER]`` with a ``kernel`` ``[features, classes]``, as every model of
  `jaxinvert.models` names it (`counts.classifier_grads`); else None."""
  try:
    weight, _ = classifier_grads(update)
  except ValueError:
    return None
  return int(weight.shape[0])


def matching_attack(
    *,
    simulate: Simulate,
    target: PyTree,
    batch_size: int,
    image_shape: Sequence[int],
    optimizer: optax.GradientTransformationExtraArgs,
    distance: objectives.Distance = objectives.Distance.L2,
    layer_weights: PyTree | None = None,
    priors: Sequence[Prior] = (),
    box: Box = Box.NONE,
    init_dist: InitDist = InitDist.UNIFORM,
    simulate_is_random: bool = False,
    num_classes: int | None = None,
) -> Attack:
  """Builds the attack that inverts ``target``, the update a client shared.

  Args:
    simulate: ``(key, images, labels) -> update`` on the victim.
    target: the shared update, same tree as ``simulate``'s output.
    batch_size: B, images to recover.
    image_shape: ``(H, W, C)``.
    optimizer: an optax transformation (see `make_optimizer`); L-BFGS's line search
      gets the objective through the ``value_fn`` extra argument.
    distance: `objectives.Distance` between simulated and shared updates.
    layer_weights: optional per-leaf weights of the distance.
    priors: `jaxinvert.priors.Prior` terms added to the objective.
    box: how images stay in [0, 1].
    init_dist: distribution of the initial dummy images.
    simulate_is_random: ``simulate`` uses its key (e.g. an unknown FedAvg batch
      order); then L-BFGS's stored line-search value is not reused across steps.
    num_classes: the victim's classes, for the runner's check of label hypotheses;
      None = read from ``target``'s last layer (`classes_of`) where it has one.

  Returns:
    An `Attack`.

  Raises:
    ValueError: non-positive batch size, or a target whose tree or shapes do not
      match what ``simulate`` produces.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  image_shape = tuple(int(d) for d in image_shape)
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
  shape = (batch_size, *image_shape)
  probe = jax.eval_shape(simulate, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32),
                         jax.ShapeDtypeStruct((batch_size,), jnp.int32))
  objectives.check_same_structure(probe, target)
  shared = target  # the default of `step` and `evaluate`, whose argument may replace it

  def target_or_shared(target):
    if target is None:
      return shared
    objectives.check_same_structure(probe, target)  # at trace time: shapes only
    return target
  priors = tuple(p for p in priors if p.weight)
  needs_anchor = any(p.needs_anchor for p in priors)

  def objective_fn(latent, key, labels, anchor, target):
    images = box.to_images(latent)
    match = objectives.update_distance(simulate(key, images, labels), target,
                                       distance=distance, layer_weights=layer_weights)
    total = match
    for prior in priors:
      total = total + prior.weight * prior.fn(images, anchor)
    return total, match

  def init(key: jax.Array, labels: jax.Array) -> AttackState:
    labels = jnp.asarray(labels, jnp.int32)
    if labels.shape != (batch_size,):
      raise ValueError(f"labels must have shape ({batch_size},), got {labels.shape}")
    if init_dist == InitDist.UNIFORM:
      images = jax.random.uniform(key, shape, jnp.float32)
    else:
      images = jnp.clip(0.5 + 0.25 * jax.random.normal(key, shape, jnp.float32), 0.0, 1.0)
    latent = box.from_images(images)
    return AttackState(
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key_data(jax.random.fold_in(key, 1)),
        latent=latent,
        labels=labels,
        opt_state=_strong(optimizer.init(latent)),
        objective=jnp.array(jnp.inf, jnp.float32),
        anchor=images if needs_anchor else jnp.zeros((), jnp.float32),
        failed=jnp.zeros((), bool),
    )

  def step(state: AttackState, target: PyTree | None = None
           ) -> tuple[AttackState, dict[str, jax.Array]]:
    target = target_or_shared(target)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)

    def value_fn(latent):
      return objective_fn(latent, key, state.labels, state.anchor, target)[0]

    reuse = (not simulate_is_random and not needs_anchor
             and optax.tree_utils.tree_get(state.opt_state, "value") is not None)
    if reuse:  # L-BFGS: the line search already evaluated this point last step
      value, grad = optax.value_and_grad_from_state(value_fn)(state.latent,
                                                              state=state.opt_state)
    else:
      value, grad = jax.value_and_grad(value_fn)(state.latent)
    updates, opt_state = optimizer.update(grad, state.opt_state, state.latent, value=value,
                                          grad=grad, value_fn=value_fn)
    latent = box.project(optax.apply_updates(state.latent, updates))
    ok = (~state.failed & jnp.isfinite(value) & jnp.all(jnp.isfinite(latent))
          & jnp.all(jnp.isfinite(grad)))
    keep = lambda new, old: jnp.where(ok, new, old)
    new_state = state._replace(
        step=state.step + 1,
        latent=keep(latent, state.latent),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        objective=jnp.where(ok, value, jnp.inf).astype(jnp.float32),
        failed=~ok,
    )
    return new_state, {"objective": new_state.objective}

  def images(state: AttackState) -> jax.Array:
    return jnp.clip(box.to_images(state.latent), 0.0, 1.0)

  def evaluate(state: AttackState, target: PyTree | None = None) -> jax.Array:
    target = target_or_shared(target)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    match = objective_fn(state.latent, key, state.labels, state.anchor, target)[1]
    return jnp.where(state.failed | ~jnp.isfinite(match), jnp.inf, match)

  return Attack(init=init, step=step, images=images, evaluate=evaluate,
                needs_anchor=needs_anchor,
                num_classes=classes_of(shared) if num_classes is None else num_classes,
                target=shared)
