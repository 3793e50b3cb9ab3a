r"""A second test between count vectors that fit the last layer alike: the feature layer's own gradient (ours).

`jaxinvert.label_fit` certifies a count vector when K logit vectors reproduce the
classifier's gradient, ``K dW = sum_k g_k o_k^T`` and ``K db = sum_k g_k`` with
``g_k = softmax(z_k) - y_k``. Once the victim is confident, wrong count vectors also fit
that to float precision (relative residuals 1e-12 to 1e-8 against the truth's 1e-14 to
1e-11; docs/labels.md), so the residual alone cannot tell them apart. The gradient of
the layer *before* the features holds equations that the classifier's does not.

Where each feature is ``o_kj = pool(act(s_c x + t_c))`` of channel ``c = j mod C``, with a
max pool or none (`jaxinvert.models.common.FeatureLayer`: the ConvNet's last BatchNorm,
LeNet's last convolution), the chain rule through the classifier gives, for the mean
cross-entropy over K images,

  dL/dt_c = (1/K) sum_k sum_{j in c} (W^T g_k)_j act'_kj
  dL/ds_c = (1/K) sum_k sum_{j in c} (W^T g_k)_j act'_kj xhat_kj,  xhat = (act^-1(o) - t_c) / s_c

where ``act'`` and ``act^-1`` are evaluated at the feature itself (the max pool routes the
derivative to its window's maximum, where the activation's value is the feature). So a
fit's logits give ``g_k``, the features follow from ``K dW = G^T O`` (G ``[K, N]`` has rank
K when K < N), and both sides can be compared. A mask-free combination, ``s dL/ds + t
dL/dt``, is a linear function of dW and adds nothing: the information is in which units
are active (``act'``), which the classifier's gradient only sees through products.

ReLU's ``act'`` is a step, and a recovered feature that is zero in truth comes back as
float noise: a unit counts as active above `RELU_ACTIVE` times the image's largest
feature. That threshold was chosen on one cell (the 1,000-step ConvNet's B=8 factor:2
batches, ad hoc, docs/labels.md): at 1e-3 the true features' own small values were cut,
at 0 the noise was counted, at 1e-5 the truth's residual fell to 1e-9 to 1e-6 where its
fit was exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinvert.models.common import Activation, FeatureLayer
from jaxinvert.types import CLASSIFIER, Params, Variables

#: A recovered ReLU feature counts as active above this fraction of its image's largest.
RELU_ACTIVE = 1e-5


def slope(activation: Activation, features: jax.Array) -> jax.Array:
  """``act'`` at the pre-activation that gives ``features`` (``[K, d]``), per feature."""
  activation = Activation(activation)
  if activation == Activation.RELU:
    scale = jnp.max(jnp.abs(features), axis=-1, keepdims=True)
    return (features > RELU_ACTIVE * scale).astype(features.dtype)
  if activation == Activation.SIGMOID:
    o = jnp.clip(features, 0.0, 1.0)
    return o * (1.0 - o)
  if activation == Activation.SOFTPLUS:
    return -jnp.expm1(-jnp.maximum(features, 0.0))  # sigmoid(x) = 1 - exp(-softplus(x))
  raise ValueError(f"no feature check for activation {activation}")


def pre_activation(activation: Activation, features: jax.Array) -> jax.Array:
  """``act^-1(features)`` where the activation is invertible (0 where ReLU is off)."""
  activation = Activation(activation)
  tiny = jnp.finfo(features.dtype).tiny
  if activation == Activation.RELU:
    return features
  if activation == Activation.SIGMOID:
    o = jnp.clip(features, tiny, 1.0 - jnp.finfo(features.dtype).eps)
    return jnp.log(o) - jnp.log1p(-o)
  if activation == Activation.SOFTPLUS:
    o = jnp.maximum(features, tiny)
    return o + jnp.log(-jnp.expm1(-o))  # log(exp(o) - 1)
  raise ValueError(f"no feature check for activation {activation}")


def layer_grads(features: jax.Array, back: jax.Array, *, layer: FeatureLayer,
                params: Params) -> jax.Array:
  """The feature layer's gradient implied by the images' features (module docstring).

  Args:
    features: ``[K, d]`` the classifier's inputs.
    back: ``[K, d]`` ``dL/do_k`` (for the mean loss, ``W^T g_k / K``).
    layer: which layer and activation.
    params: the victim's ``params``.

  Returns:
    ``[C]`` the gradient of ``bias``, then ``[C]`` of ``scale`` if ``layer.scaled``.
  """
  shift = params[layer.name]["bias"]
  channels = shift.shape[0]
  num_images = features.shape[0]
  per_channel = lambda a: a.reshape(num_images, -1, channels).sum(axis=(0, 1))
  active = back * slope(layer.activation, features)
  out = [per_channel(active)]
  if layer.scaled:
    pre = pre_activation(layer.activation, features).reshape(num_images, -1, channels)
    xhat = ((pre - shift) / params[layer.name]["scale"]).reshape(features.shape)
    out.append(per_channel(active * xhat))
  return jnp.concatenate(out)


def residual(logits: jax.Array, *, onehot: jax.Array, update: Params, variables: Variables,
             layer: FeatureLayer) -> jax.Array:
  """Relative squared residual of the feature layer's gradient for one fit.

  Args:
    logits: ``[K, N]`` a fit's logits (`label_fit.Fit.logits`).
    onehot: ``[K, N]`` the labels they were fitted with.
    update: the FedSGD gradient tree.
    variables: the weights it was taken at.
    layer: the victim's `FeatureLayer`.

  Returns:
    ``|predicted - shared|^2 / |shared|^2`` over the layer's ``bias`` (and ``scale``)
    gradients; 0 where the shared ones are all zero (nothing to compare).
  """
  num_images = logits.shape[0]
  params = variables["params"]
  kernel = params[CLASSIFIER]["kernel"]                 # [d, N]
  g = jax.nn.softmax(logits) - onehot                   # [K, N]
  moments = num_images * update[CLASSIFIER]["kernel"].T  # K dW [N, d]
  features = jnp.linalg.lstsq(g.T, moments)[0]          # [K, d]
  predicted = layer_grads(features, g @ kernel.T / num_images, layer=layer, params=params)
  shared = [update[layer.name]["bias"]] + ([update[layer.name]["scale"]] if layer.scaled else [])
  shared = jnp.concatenate(shared)
  norm = jnp.sum(jnp.square(shared))
  rel = jnp.sum(jnp.square(predicted - shared)) / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny)
  return jnp.where(norm > 0, jnp.where(jnp.isfinite(rel), rel, jnp.inf), 0.0)
