"""The feature layer's gradient as a second test between fitted count vectors
(jaxinvert.label_check) and how `label_fit.search` uses it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import label_check, label_fit, labels, models, victim
from jaxinvert.types import CLASSIFIER

_N = 10


def _case(name, labels_list, **model_kwargs):
  size = 32 if name == "convnet" else 8
  model = models.get_model(name, num_classes=_N, image_size=size, **model_kwargs)
  variables = jax.jit(model.init)(jax.random.key(3))
  y = jnp.asarray(labels_list, jnp.int32)
  x = jax.random.uniform(jax.random.key(5), (len(labels_list), *model.image_shape))
  grad = jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, x, y)
  features, _ = model.features(variables, x)
  layer = variables["params"][CLASSIFIER]
  return model, variables, y, grad, features, features @ layer["kernel"] + layer["bias"]


@pytest.mark.parametrize("name,kwargs,layer_name,scaled,batch", [
    ("convnet", dict(width=2), "bn7", True, [1, 1, 4, 7]),      # BatchNorm, ReLU, max pool
    # Without BatchNorm this untrained ConvNet gives two images of one class the same
    # softmax to 1e-5, so K dW cannot tell their features apart: unique labels here.
    ("convnet", dict(width=2, batchnorm=False), "conv7", False, [1, 3, 4, 7]),
    ("convnet", dict(width=2, hidden=16), "hidden", False, [1, 1, 4, 7]),  # dense, no pool
    ("lenet", dict(width=4), "conv2", False, [1, 1, 4, 7]),      # sigmoid, no pool
])
def test_the_feature_layers_gradient_follows_from_features_and_logits(name, kwargs,
                                                                      layer_name, scaled,
                                                                      batch):
  # Checks the chain rule of the module docstring against the victim's own gradient,
  # then that the residual, which recovers the features from K dW, is ~0 at the true
  # logits and not when one image's label is changed.
  model, variables, y, grad, features, logits = _case(name, batch, **kwargs)
  layer = model.feature_layer
  assert (layer.name, layer.scaled) == (layer_name, scaled)
  back = (jax.nn.softmax(logits) - jax.nn.one_hot(y, _N)) @ variables["params"][
      CLASSIFIER]["kernel"].T / len(y)
  predicted = label_check.layer_grads(features, back, layer=layer, params=variables["params"])
  shared = jnp.concatenate([grad[layer_name]["bias"]]
                           + ([grad[layer_name]["scale"]] if scaled else []))
  np.testing.assert_allclose(predicted, shared, rtol=1e-4,
                             atol=1e-6 * float(jnp.max(jnp.abs(shared))))
  check = lambda labels_: float(label_check.residual(
      logits, onehot=jax.nn.one_hot(labels_, _N), update=grad, variables=variables,
      layer=layer))
  assert check(y) < 1e-8
  assert check(y.at[0].set(2)) > 1e-4


def test_resnets_have_no_feature_layer():
  # A global average pool: the features do not say which units were active.
  assert models.get_model("resnet18", num_classes=_N, width=4).feature_layer is None


def test_search_answers_the_certified_fit_that_the_check_prefers():
  model, variables, y, grad, _, _ = _case("lenet", [1, 1, 4, 7], width=4)
  true = jnp.asarray(np.bincount(np.asarray(y), minlength=_N))
  wrong = true.at[1].add(-1).at[4].add(1)
  sources = jnp.stack([true, wrong]).astype(jnp.float32)
  prefers_wrong = lambda logits, onehot: jnp.sum(jnp.square(onehot.sum(0) - wrong))
  nan = lambda logits, onehot: jnp.full((), jnp.nan)
  search = jax.jit(lambda check, below: label_fit.search(
      jax.random.key(0), base_scores=sources, update=grad, variables=variables,
      num_images=4, per_source=1, rounds=0, check=check, certified_below=below)[1],
      static_argnums=0)
  np.testing.assert_array_equal(search(None, 1e-6), true)           # lowest residual
  np.testing.assert_array_equal(search(prefers_wrong, 1e30), wrong)  # both "certified"
  np.testing.assert_array_equal(search(prefers_wrong, 0.0), true)    # none certified
  np.testing.assert_array_equal(search(nan, 1e30), true)             # no usable check


def test_restore_names_a_feature_layer_the_victim_lacks():
  model, variables, y, grad, _, _ = _case("lenet", [1, 2], width=4)
  bad = models.FeatureLayer("bn7", models.Activation.RELU, scaled=True)
  with pytest.raises(ValueError, match="feature_layer.*bn7"):
    labels.restore(jax.random.key(0), method=labels.Method.FIT, update=grad,
                   features_fn=model.features, variables=variables, num_images=2,
                   image_shape=model.image_shape, feature_layer=bad)
  with pytest.raises(ValueError, match="Activation"):
    label_check.slope("tanh", jnp.zeros((2, 3)))
