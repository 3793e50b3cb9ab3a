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
from typing import Callable, Iterator, Sequence

import jax
import numpy as np

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


def _multiset_permutations(values: np.ndarray) -> Iterator[np.ndarray]:
  """Distinct permutations of ``values`` in lexicographic order (next-permutation)."""
  perm = np.sort(np.asarray(values))
  while True:
    yield perm.copy()
    pivots = np.nonzero(perm[:-1] < perm[1:])[0]
    if not pivots.size:
      return
    i = pivots[-1]
    j = i + 1 + np.nonzero(perm[i + 1:] > perm[i])[0][-1]
    perm[i], perm[j] = perm[j], perm[i]
    perm[i + 1:] = perm[i + 1:][::-1].copy()


def label_arrangements(labels: Sequence[int], *, order: np.ndarray, local_batch_size: int,
                       max_num: int, max_scanned: int = 100_000) -> np.ndarray:
  """Placements of a label multiset on the batch positions that a FedAvg client's
  mini-batches tell apart (ours).

  Label restoration from a FedAvg update gives how many images of each class the client
  holds, not which mini-batch each was in. With the client's example order known
  (`OrderAssumption.KNOWN`), the unrolled simulation puts dummy image i, with label
  ``labels[i]``, in the mini-batches the order gives position i; a placement whose
  mini-batches hold other label multisets than the client's simulates another local
  training, and the attack fails although the counts are right. Two placements are the
  same for the simulation when every local step's mini-batch holds the same labels
  (order within a mini-batch does not change its mean loss). This lists one placement
  per such class, to be tried as label hypotheses and chosen by matching loss.

  Args:
    labels: the label multiset, ``[B]`` (any order).
    order: the client's example order, ``[local_epochs, B]`` (`victim.epoch_orders`).
    local_batch_size: examples per local step.
    max_num: most placements returned.
    max_scanned: most permutations looked at (the count grows as B!).

  Returns:
    ``[A, B]`` int32 placements, A <= ``max_num``; the first is the labels sorted. Distinct
    permutations are scanned in lexicographic order, so when A is capped the list is the
    first placements in that order, not a sample.

  Raises:
    ValueError: ``order`` that does not hold B positions per epoch, or a batch size that
      is not a multiple of ``local_batch_size`` (`victim.local_steps`), or ``max_num < 1``.
  """
  labels = np.sort(np.asarray(labels, np.int32))
  order = np.asarray(order)
  if order.ndim != 2 or order.shape[1] != labels.size:
    raise ValueError(f"order must be [local_epochs, {labels.size}], got shape {order.shape}")
  victim.local_steps(labels.size, local_epochs=order.shape[0],
                     local_batch_size=local_batch_size)  # validates the mini-batches
  if max_num < 1:
    raise ValueError(f"max_num must be >= 1, got {max_num}")
  steps = order.reshape(-1, local_batch_size)
  placements: dict[tuple, np.ndarray] = {}
  for scanned, perm in enumerate(_multiset_permutations(labels)):
    if len(placements) >= max_num or scanned >= max_scanned:
      break
    placements.setdefault(tuple(map(tuple, np.sort(perm[steps], axis=1))), perm)
  return np.stack(list(placements.values())).astype(np.int32)
