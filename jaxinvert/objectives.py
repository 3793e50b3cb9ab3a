"""Distances between a shared update and one simulated from dummy data.

* `Distance.L2`: squared Euclidean distance summed over all parameters, the
  objective of DLG (Zhu et al., 2019), iDLG and Geng et al. (arXiv 2110.09074, Eq. 6).
* `Distance.COSINE`: one minus the cosine similarity of the whole update seen as one
  vector, the objective of Inverting Gradients (Geiping et al., NeurIPS 2020, Eq. 4):
  invariant to the update's scale, so it also matches clipped or rescaled updates.

Both accept optional per-layer weights: a tree of the update's structure whose
leaves are scalars (0 drops a layer).
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp

from jaxinvert.types import PyTree

_EPS = 1e-12


class Distance(enum.Enum):
  L2 = "l2"
  COSINE = "cosine"


def check_same_structure(simulated: PyTree, target: PyTree, *, what: str = "update") -> None:
  """Raises ValueError when two updates differ in tree structure or leaf shapes."""
  s_def, t_def = jax.tree.structure(simulated), jax.tree.structure(target)
  if s_def != t_def:
    raise ValueError(f"the shared {what} does not match the victim's parameters: "
                     f"tree {t_def} vs {s_def}")
  for (path, s), t in zip(jax.tree_util.tree_flatten_with_path(simulated)[0],
                          jax.tree.leaves(target)):
    if jnp.shape(s) != jnp.shape(t):
      raise ValueError(f"the shared {what} does not match the victim's parameters at "
                       f"{jax.tree_util.keystr(path)}: shape {jnp.shape(t)} vs {jnp.shape(s)}")


def _weights(target: PyTree, layer_weights: PyTree | None) -> list[jax.Array]:
  if layer_weights is None:
    return [jnp.ones((), jnp.float32)] * len(jax.tree.leaves(target))
  check_same_structure(layer_weights, jax.tree.map(lambda _: 0.0, target),
                       what="layer_weights")
  return [jnp.asarray(w, jnp.float32) for w in jax.tree.leaves(layer_weights)]


def squared_l2(simulated: PyTree, target: PyTree, *, layer_weights: PyTree | None = None
               ) -> jax.Array:
  """sum_l w_l ||s_l - t_l||^2 over the leaves l of the update."""
  weights = _weights(target, layer_weights)
  terms = [w * jnp.sum(jnp.square(s - t)) for w, s, t in
           zip(weights, jax.tree.leaves(simulated), jax.tree.leaves(target))]
  return jnp.sum(jnp.stack(terms))


def cosine(simulated: PyTree, target: PyTree, *, layer_weights: PyTree | None = None
           ) -> jax.Array:
  """1 - <s, t>_w / (||s||_w ||t||_w), with <a, b>_w = sum_l w_l <a_l, b_l>."""
  weights = _weights(target, layer_weights)
  leaves_s, leaves_t = jax.tree.leaves(simulated), jax.tree.leaves(target)
  dot = sum(w * jnp.vdot(s, t) for w, s, t in zip(weights, leaves_s, leaves_t))
  norm_s = sum(w * jnp.vdot(s, s) for w, s in zip(weights, leaves_s))
  norm_t = sum(w * jnp.vdot(t, t) for w, t in zip(weights, leaves_t))
  return 1.0 - dot / (jnp.sqrt(norm_s + _EPS) * jnp.sqrt(norm_t + _EPS))


def update_distance(simulated: PyTree, target: PyTree, *, distance: Distance,
                    layer_weights: PyTree | None = None) -> jax.Array:
  """The chosen `Distance` between two updates of the same tree structure."""
  if distance == Distance.L2:
    return squared_l2(simulated, target, layer_weights=layer_weights)
  if distance == Distance.COSINE:
    return cosine(simulated, target, layer_weights=layer_weights)
  raise ValueError(f"unknown distance {distance!r}")
