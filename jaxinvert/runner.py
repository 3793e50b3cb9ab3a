"""Runs one attack over restarts x label hypotheses and picks the answer.

An attack (`jaxinvert.attack`) is written for one restart. Here P = H x R copies
(H label hypotheses, R restarts each) are stacked on a leading axis and stepped
together by an execution `Strategy`:

* ``VMAP``: one jitted `jax.vmap` of the step over all P; the fast choice on GPU/TPU.
* ``MAP``: one jitted `jax.lax.map` (a loop inside XLA), low memory.
* ``HOST_LOOP``: a Python loop of one jitted single-restart step (or ``steps_per_call``
  steps in a `lax.scan`) per restart. On
  XLA:CPU the fastest per restart-step (see `experiments/bench_restarts.py`), so it
  is the CPU default.
* ``SHARDED``: the vmapped step with the P axis split over a device `Mesh`
  (`jaxinvert.parallel`), so several GPUs or a TPU slice run one attack.

Within a chunk of ``log_every`` steps nothing returns to the host; at chunk
boundaries the loss curve is fetched once (progress bar), the state may be saved
(orbax, `jaxinvert.checkpoint`) and convergence is checked. The answer is the
(hypothesis, restart) with the lowest update-matching loss: never the ground truth.
"""

from __future__ import annotations

import enum
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxinvert.attack import Attack, AttackState
from jaxinvert.checkpoint import AttackCheckpointer
from jaxinvert import parallel, victim


class Strategy(enum.Enum):
  VMAP = "vmap"
  MAP = "map"
  HOST_LOOP = "host_loop"
  SHARDED = "sharded"


def default_strategy(platform: str | None = None, device_count: int | None = None) -> Strategy:
  """SHARDED across several processes (multi-host) or accelerators; else HOST_LOOP on CPU,
  VMAP on one accelerator."""
  platform = platform or jax.default_backend()
  device_count = jax.device_count() if device_count is None else device_count
  if jax.process_count() > 1:
    return Strategy.SHARDED
  if platform == "cpu":
    return Strategy.HOST_LOOP
  return Strategy.SHARDED if device_count > 1 else Strategy.VMAP


def default_steps_per_call(platform: str | None = None) -> int:
  """Steps fused into one jitted `lax.scan` when `run` is not told.

  1 on CPU and GPU, where it was measured fastest (docs/speed.md): XLA:CPU's
  convolutions slow down inside loops, and on one H200 (ConvNet w64, B=4, one copy,
  `experiments/bench_restarts.py`) `vmap` took 5.9 ms per step called one by one against
  8.9 ms with 10 steps in a `lax.scan`. 25 on other backends (TPU), not measured.
  """
  platform = platform or jax.default_backend()
  return 1 if platform in ("cpu", "gpu", "cuda", "rocm") else 25


class RunResult(NamedTuple):
  """Outcome of `run`.

  Attributes:
    images: the chosen reconstruction, ``[B, H, W, C]`` in [0, 1].
    labels: its label hypothesis, ``[B]``.
    hypothesis, restart: indices of the chosen copy.
    losses: ``[H, R]`` final matching loss of every copy (+inf where failed).
    all_images: ``[H, R, B, H, W, C]``.
    curve: ``[steps, H, R]`` objective at every step.
    steps: iterations done (fewer than asked when converged early).
    seconds: wall time of the optimisation, compilation included.
    states: the final batched `AttackState` (leading axis H x R).
    resumed_from: the checkpointed step the run resumed from (0: a fresh start).
  """

  images: np.ndarray
  labels: np.ndarray
  hypothesis: int
  restart: int
  losses: np.ndarray
  all_images: np.ndarray
  curve: np.ndarray
  steps: int
  seconds: float
  states: Any
  resumed_from: int = 0


def init_states(attack: Attack, key: jax.Array, hypotheses: jax.Array, restarts: int
                ) -> AttackState:
  """Stacked initial states, leading axis H x R (hypothesis-major).

  Each copy gets its own key from one `jax.random.split` of ``key``.
  """
  hypotheses = jnp.asarray(hypotheses, jnp.int32)
  if hypotheses.ndim != 2:
    raise ValueError(f"hypotheses must be [H, B] label arrays, got shape {hypotheses.shape}")
  if restarts <= 0:
    raise ValueError(f"restarts must be positive, got {restarts}")
  victim.check_label_range(hypotheses, attack.num_classes, what="label hypotheses")
  num = hypotheses.shape[0] * restarts
  keys = jax.random.split(key, num)
  labels = jnp.repeat(hypotheses, restarts, axis=0)
  return jax.jit(jax.vmap(attack.init))(keys, labels)


def _with_anchor(attack: Attack, states: AttackState, restarts: int) -> AttackState:
  """Sets every copy's anchor to the mean image of its hypothesis' healthy restarts."""
  if not attack.needs_anchor:
    return states
  images = jax.vmap(attack.images)(states)
  grouped = images.reshape(-1, restarts, *images.shape[1:])
  healthy = (~states.failed).reshape(-1, restarts).astype(images.dtype)
  weights = healthy / jnp.maximum(healthy.sum(axis=1, keepdims=True), 1.0)
  mean = jnp.einsum("hr,hr...->h...", weights, grouped)
  anchor = jnp.repeat(mean, restarts, axis=0)
  return states._replace(anchor=jax.lax.stop_gradient(anchor))


def _on_target(attack: Attack) -> tuple[Any, Any, Any]:
  """``(step, evaluate, target)``: the attack's functions of ``(state, target)`` and the
  target to pass them (`Attack.target`); for an attack without a target, its functions of
  the state alone, given a target of None that they ignore."""
  if attack.target is not None:
    return attack.step, attack.evaluate, attack.target
  return (lambda s, _: attack.step(s)), (lambda s, _: attack.evaluate(s)), None


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, num):
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(num)]


class Stepper:
  """Advances the stacked states of `init_states` by n steps under one strategy.

  Built once per attack (it holds the jitted programs), used by `run` and by
  `experiments/bench_restarts.py` to time steps apart from compilation:
  ``work = stepper.prepare(states)``, ``work, objective = stepper.advance(work, n)``,
  ``states = stepper.collect(work)``.
  """

  def __init__(self, attack: Attack, strategy: Strategy, restarts: int, num: int,
               steps_per_call: int, mesh):
    self.attack, self.strategy, self.num = attack, strategy, num
    self.steps_per_call = steps_per_call

    # The shared update is an argument of every program, not a constant of it
    # (`Attack.target`): the next attack of the same shapes and victim, jitted anew by its
    # own Stepper, lowers to the same programs, which JAX's persistent cache then serves.
    step, _, self._target = _on_target(attack)

    def batched(states, target):
      states = _with_anchor(attack, states, restarts)
      if strategy == Strategy.MAP:
        return jax.lax.map(lambda s: step(s, target), states)
      return jax.vmap(step, in_axes=(0, None))(states, target)

    def scanned(states, target):
      return jax.lax.scan(lambda s, _: batched(s, target), states, None, length=steps_per_call)

    if strategy == Strategy.HOST_LOOP:
      self._single = jax.jit(step)
      self._single_many = jax.jit(lambda s, t: jax.lax.scan(lambda c, _: step(c, t), s, None,
                                                            length=steps_per_call))
      self._anchor = jax.jit(lambda s: _with_anchor(attack, s, restarts))
    elif strategy == Strategy.SHARDED:
      # States stay split over the devices; the objectives the host reads every chunk are
      # replicated, so every host of a multi-host run can read them. So is the target.
      sharding, whole = parallel.copies_sharding(mesh), parallel.replicated(mesh)
      self._target = jax.device_put(self._target, whole)
      self._one = jax.jit(batched, in_shardings=(sharding, whole),
                          out_shardings=(sharding, whole))
      self._many = jax.jit(scanned, in_shardings=(sharding, whole),
                           out_shardings=(sharding, whole))
    else:
      self._one = jax.jit(batched)
      self._many = jax.jit(scanned)

  def prepare(self, states):
    return _unstack(states, self.num) if self.strategy == Strategy.HOST_LOOP else states

  def collect(self, states):
    return _stack(states) if self.strategy == Strategy.HOST_LOOP else states

  def advance(self, states, n: int):
    """n steps; returns (states, [n, P] objective as a device array)."""
    rows = []
    if self.strategy == Strategy.HOST_LOOP:
      done = 0
      while done < n:
        if self.attack.needs_anchor:  # the anchor couples the restarts at every step
          states = _unstack(self._anchor(_stack(states)), self.num)
        fuse = (self.steps_per_call > 1 and not self.attack.needs_anchor
                and n - done >= self.steps_per_call)
        program = self._single_many if fuse else self._single
        outs = [program(s, self._target) for s in states]
        states = [o[0] for o in outs]
        objective = jnp.stack([o[1]["objective"] for o in outs], axis=-1)
        rows.append(objective if fuse else objective[None])
        done += self.steps_per_call if fuse else 1
      return states, jnp.concatenate(rows)
    done = 0
    while done < n:
      if self.steps_per_call > 1 and n - done >= self.steps_per_call:
        states, metrics = self._many(states, self._target)
        rows.append(metrics["objective"])
        done += self.steps_per_call
      else:
        states, metrics = self._one(states, self._target)
        rows.append(metrics["objective"][None])
        done += 1
    return states, jnp.concatenate(rows)


def run(
    attack: Attack,
    *,
    key: jax.Array,
    hypotheses: jax.Array,
    restarts: int = 1,
    iterations: int,
    strategy: Strategy | None = None,
    steps_per_call: int | None = None,
    log_every: int = 100,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    patience: int | None = None,
    tol: float = 1e-4,
    progress: bool = True,
    description: str = "attack",
) -> RunResult:
  """Optimises H x R copies of ``attack`` and returns the lowest-loss one.

  Args:
    attack: from `jaxinvert.attack.matching_attack`.
    key: PRNG key of the whole run (split once into the copies' keys).
    hypotheses: ``[H, B]`` label hypotheses, best first (`jaxinvert.labels`).
    restarts: R random initialisations per hypothesis.
    iterations: optimisation steps.
    strategy: execution `Strategy`; None = `default_strategy()`.
    steps_per_call: steps fused into one jitted `lax.scan`; None =
      `default_steps_per_call()`.
    log_every: steps between host syncs (progress, checkpoint, convergence).
    checkpoint_dir: if set, resume from the latest checkpoint there and save to it.
    checkpoint_every: steps between checkpoints (a multiple of ``log_every``);
      default ``log_every``.
    mesh: device mesh for ``SHARDED`` (default: all devices, `parallel.make_mesh`).
    patience: stop when the best objective improved by less than a relative ``tol``
      over this many consecutive chunks; None = run all iterations.
    tol: relative improvement that counts for ``patience``.
    progress: show a tqdm bar.
    description: the bar's label.

  Returns:
    A `RunResult`.

  Raises:
    ValueError: a negative count, hypotheses not ``[H, B]``, or labels outside
      ``[0, attack.num_classes)``.
  """
  if iterations < 0:
    raise ValueError(f"iterations must be >= 0, got {iterations}")
  if log_every <= 0:
    raise ValueError(f"log_every must be positive, got {log_every}")
  strategy = strategy or default_strategy()
  if steps_per_call is None:
    steps_per_call = default_steps_per_call()
  if steps_per_call < 1:
    raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
  checkpoint_every = checkpoint_every or log_every
  if checkpoint_every % log_every:
    raise ValueError(f"checkpoint_every ({checkpoint_every}) must be a multiple of log_every "
                     f"({log_every})")
  hypotheses = jnp.asarray(hypotheses, jnp.int32)
  num_hyp = hypotheses.shape[0]
  num = num_hyp * restarts
  start = time.perf_counter()
  states = init_states(attack, key, hypotheses, restarts)
  if strategy == Strategy.SHARDED:
    mesh = mesh or parallel.make_mesh()
    parallel.check_divisible(num, mesh)
    states = jax.device_put(states, parallel.copies_sharding(mesh))
  step, curve = 0, np.zeros((0, num), np.float32)
  resumed_from = 0
  saver = AttackCheckpointer(checkpoint_dir) if checkpoint_dir else None
  if saver is not None:
    restored = saver.restore(states)
    if restored is not None:
      step, states, curve = restored
      resumed_from = step
      if strategy == Strategy.SHARDED:
        states = jax.device_put(states, parallel.copies_sharding(mesh))
  stepper = Stepper(attack, strategy, restarts, num, steps_per_call, mesh)
  work = stepper.prepare(states)
  curves = [curve]
  best, stale = np.inf, 0
  bar = tqdm.tqdm(total=iterations, initial=min(step, iterations), desc=description,
                  disable=not progress, leave=False)
  while step < iterations:
    n = min(log_every - step % log_every, iterations - step)
    work, rows = stepper.advance(work, n)
    rows = np.asarray(rows)  # the one host sync of the chunk
    curves.append(rows)
    step += n
    bar.update(n)
    chunk_best = float(np.min(np.where(np.isfinite(rows[-1]), rows[-1], np.inf)))
    bar.set_postfix(objective=f"{chunk_best:.3e}")
    if saver is not None and step % checkpoint_every == 0:
      saver.save(step, stepper.collect(work), np.concatenate(curves))
    if patience is not None:
      if chunk_best < best * (1.0 - tol) or not np.isfinite(best):
        best, stale = chunk_best, 0
      else:
        stale += 1
        if stale >= patience:
          break
  bar.close()
  states = stepper.collect(work)
  if saver is not None:
    saver.close()
  readback = ({"out_shardings": parallel.replicated(mesh)} if strategy == Strategy.SHARDED
              else {})
  _, evaluate, target = _on_target(attack)
  if strategy == Strategy.SHARDED:
    target = jax.device_put(target, parallel.replicated(mesh))
  final = lambda s, t: (jax.vmap(evaluate, in_axes=(0, None))(s, t), jax.vmap(attack.images)(s))
  losses, all_images = jax.jit(final, **readback)(states, target)
  losses = np.asarray(losses, np.float64)
  losses = np.where(np.isfinite(losses), losses, np.inf).reshape(num_hyp, restarts)
  all_images = np.asarray(all_images)
  all_images = all_images.reshape(num_hyp, restarts, *all_images.shape[1:])
  best_index = int(np.argmin(losses)) if np.isfinite(losses).any() else 0
  h, r = divmod(best_index, restarts)
  return RunResult(
      images=all_images[h, r],
      labels=np.asarray(hypotheses[h]),
      hypothesis=h,
      restart=r,
      losses=losses,
      all_images=all_images,
      curve=np.concatenate(curves).reshape(-1, num_hyp, restarts),
      steps=step,
      seconds=time.perf_counter() - start,
      states=states,
      resumed_from=resumed_from,
  )
