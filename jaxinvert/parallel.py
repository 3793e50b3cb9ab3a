"""One attack across devices: a Mesh over the copies (hypotheses x restarts).

The runner stacks H x R attack copies on a leading axis; here that axis is split
over a one-dimensional `jax.sharding.Mesh` named ``'copies'`` with `NamedSharding`,
so each device optimises its share and XLA does the final lowest-loss selection
across devices. Multi-host runs call `initialize_distributed` first (every host runs
the same program; `jax.devices()` then lists all hosts' devices).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "copies"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``'copies'`` over ``devices`` (default: all, every host)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (AXIS,))


def copies_sharding(mesh: Mesh) -> NamedSharding:
  """Splits the leading (copies) axis over the mesh; other axes stay whole."""
  return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device (of every host) holds the whole array: what the host reads back."""
  return NamedSharding(mesh, PartitionSpec())


def check_divisible(num_copies: int, mesh: Mesh) -> None:
  """The copies must split evenly: raise a clear error otherwise."""
  devices = mesh.devices.size
  if num_copies % devices:
    raise ValueError(
        f"restarts x hypotheses = {num_copies} does not divide over {devices} devices; "
        f"choose restarts so that hypotheses x restarts is a multiple of {devices}")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize` for multi-host runs (TPU pods auto-detect all args)."""
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
