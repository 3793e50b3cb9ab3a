"""Orbax checkpoints: victim weights, and attack state for bit-identical resume."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxinvert.types import PyTree


def _manager(directory: str, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save_victim(directory: str, step: int, variables: PyTree, *,
                metadata: dict[str, Any] | None = None) -> None:
  """Saves victim variables (and JSON metadata such as the model config) at ``step``."""
  with _manager(directory, max_to_keep=None) as mngr:
    mngr.save(step, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables),
        metadata=ocp.args.JsonSave(metadata or {})))
    mngr.wait_until_finished()


def victim_steps(directory: str) -> list[int]:
  """Steps at which victim checkpoints exist in ``directory``."""
  if not os.path.isdir(directory):
    return []
  with _manager(directory, max_to_keep=None) as mngr:
    return sorted(mngr.all_steps())


def load_victim(directory: str, step: int | None = None, *, like: PyTree | None = None
                ) -> tuple[PyTree, dict[str, Any]]:
  """Loads victim variables saved by `save_victim`.

  Args:
    directory: the checkpoint directory.
    step: which step; ``None`` = the latest.
    like: variables of the same model (e.g. ``model.init(key)``) giving the tree
      structure to restore into; without it plain nested dicts come back.

  Returns:
    ``(variables, metadata)``.

  Raises:
    FileNotFoundError: no checkpoint (at that step) in ``directory``.
  """
  steps = victim_steps(directory)
  if not steps:
    raise FileNotFoundError(f"no victim checkpoint in {directory!r}; train one with "
                            f"python -m experiments.train_victim --workdir=...")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise FileNotFoundError(f"no victim checkpoint at step {step} in {directory!r}; "
                            f"steps saved: {steps}")
  with _manager(directory, max_to_keep=None) as mngr:
    target = (ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, like))
              if like is not None else ocp.args.StandardRestore())
    restored = mngr.restore(step, args=ocp.args.Composite(variables=target,
                                                          metadata=ocp.args.JsonRestore()))
  return restored["variables"], dict(restored["metadata"] or {})


class AttackCheckpointer:
  """Saves and restores the batched attack state and its loss curve.

  Keys inside the state are raw uint32 key data, so the state is a plain array tree.
  """

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    self._mngr = _manager(self.directory, max_to_keep=2)

  def save(self, step: int, states: PyTree, curve: np.ndarray) -> None:
    self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(states),
        curve=ocp.args.ArraySave(np.asarray(curve, np.float32))))
    self._mngr.wait_until_finished()

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def restore(self, like: PyTree) -> tuple[int, PyTree, np.ndarray] | None:
    """``(step, states, curve)`` of the latest checkpoint, or None if there is none."""
    step = self._mngr.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), curve=ocp.args.ArrayRestore()))
    return step, restored["state"], np.asarray(restored["curve"])

  def close(self) -> None:
    self._mngr.close()
