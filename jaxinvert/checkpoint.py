"""Orbax checkpoints: victim weights, and attack state for bit-identical resume."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
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
      structure, shapes and dtypes to restore into; without it plain nested dicts come
      back.

  Returns:
    ``(variables, metadata)``.

  Raises:
    FileNotFoundError: no checkpoint (at that step) in ``directory``.
    ValueError: ``like`` is another model than the one saved (a leaf missing, extra or
      of another shape); the message names the leaf and the saved metadata.
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
    restored = mngr.restore(step, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(), metadata=ocp.args.JsonRestore()))
  metadata = dict(restored["metadata"] or {})
  variables = restored["variables"]
  if like is not None:
    variables = _restored_like(like, variables, f"step {step} in {directory!r}", metadata)
  return variables, metadata


def _restored_like(like: PyTree, stored: PyTree, where: str, metadata: dict[str, Any]
                   ) -> PyTree:
  """``stored`` (plain nested dicts) in ``like``'s tree, shapes checked leaf by leaf."""
  saved = {jax.tree_util.keystr(path): leaf
           for path, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]}
  wanted, treedef = jax.tree_util.tree_flatten_with_path(like)
  hint = ("; build the victim with the config it was trained with (saved metadata: "
          f"{metadata})")
  extra = sorted(set(saved) - {jax.tree_util.keystr(path) for path, _ in wanted})
  if extra:
    raise ValueError(f"the victim checkpoint at {where} holds {extra[0]}, which the model "
                     f"has not{hint}")
  leaves = []
  for path, ref in wanted:
    name = jax.tree_util.keystr(path)
    if name not in saved:
      raise ValueError(f"the victim checkpoint at {where} has no {name}{hint}")
    leaf = np.asarray(saved[name])
    if leaf.shape != tuple(ref.shape):
      raise ValueError(f"the victim checkpoint at {where} saved {name} with shape "
                       f"{leaf.shape}, the model has {tuple(ref.shape)}{hint}")
    leaves.append(jnp.asarray(leaf, dtype=ref.dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)


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
