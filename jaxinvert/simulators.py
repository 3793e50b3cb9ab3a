"""What the server simulates on dummy data, per federated setting.

The attack (`jaxinvert.attack`) matches ``simulate(key, images, labels)`` to a
target; this module builds that pair for each threat model:

* FedSGD: the gradient (`victim.fedsgd_update`) against the shared gradient.
* FedAvg, `FedAvgMethod.UNROLL`: the whole local training (`victim.fedavg_update`,
  unrolled) against the shared weight change (Dimitrov et al., TMLR 2022).
* FedAvg, `FedAvgMethod.APPROX`: one gradient against
  -(theta_T - theta_0) / (local_lr x steps), Geng et al.'s treatment of FedAvg.

The server does not know how the client ordered its mini-batches:
`OrderAssumption` says what the unrolled simulation assumes.
"""

from __future__ import annotations

import enum
from typing import Callable

import jax

from jaxinvert import victim
from jaxinvert.types import ApplyFn, Params, PyTree, Variables

Simulate = Callable[[jax.Array, jax.Array, jax.Array], PyTree]


class FedAvgMethod(enum.Enum):
  UNROLL = "unroll"
  APPROX = "approx"


class OrderAssumption(enum.Enum):
  """The client's mini-batch order, as the attack models it."""

  KNOWN = "known"      # the true order (or in order) is known to the server
  RANDOM = "random"    # a fresh random order at every attack step (stochastic objective)
  AVERAGE = "average"  # the mean simulated update over several random orders per step


def fedsgd(apply_fn: ApplyFn, variables: Variables) -> Simulate:
  """``simulate`` for FedSGD: the gradient on the dummy batch."""

  def simulate(key, images, labels):
    del key
    return victim.fedsgd_update(apply_fn, variables, images, labels)

  return simulate


def fedavg_unroll(apply_fn: ApplyFn, variables: Variables, *, local_epochs: int,
                  local_batch_size: int, local_lr: float,
                  order: OrderAssumption = OrderAssumption.KNOWN,
                  known_order: jax.Array | None = None, order_samples: int = 2,
                  remat: bool = False, unroll: int | bool = 1) -> Simulate:
  """``simulate`` for FedAvg by unrolling the client's local training.

  Args:
    apply_fn, variables: the victim at the start of the round.
    local_epochs, local_batch_size, local_lr: the client's local training.
    order: what the attack assumes about the mini-batch order.
    known_order: with ``OrderAssumption.KNOWN``, the order ``[epochs, B]``; None =
      the batch in its given order.
    order_samples: orders averaged with ``OrderAssumption.AVERAGE``.
    remat: `jax.checkpoint` each local step (memory for long unrolls).
    unroll: local steps per `lax.scan` iteration (`jaxinvert.victim.fedavg_update`).

  Returns:
    ``simulate(key, images, labels) -> params delta`` (theta_T - theta_0).
  """
  if order == OrderAssumption.AVERAGE and order_samples < 1:
    raise ValueError(f"order_samples must be >= 1, got {order_samples}")

  def one(images, labels, key=None, fixed=None):
    new = victim.fedavg_update(apply_fn, variables, images, labels, local_epochs=local_epochs,
                               local_batch_size=local_batch_size, local_lr=local_lr, key=key,
                               order=fixed, remat=remat, unroll=unroll)
    return victim.weight_delta(variables, new)

  def simulate(key, images, labels):
    if order == OrderAssumption.KNOWN:
      return one(images, labels, fixed=known_order)
    if order == OrderAssumption.RANDOM:
      return one(images, labels, key=key)
    deltas = jax.vmap(lambda k: one(images, labels, key=k))(jax.random.split(key, order_samples))
    return jax.tree.map(lambda d: d.mean(axis=0), deltas)

  return simulate


def fedavg_approx_target(delta: Params, *, local_lr: float, steps: int) -> Params:
  """Geng et al.'s FedAvg gradient: -(theta_T - theta_0) / (local_lr x steps)."""
  if local_lr <= 0 or steps <= 0:
    raise ValueError(f"local_lr and steps must be positive, got {local_lr}, {steps}")
  return jax.tree.map(lambda d: -d / (local_lr * steps), delta)

