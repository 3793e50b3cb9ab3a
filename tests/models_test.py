import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import models
from jaxinvert.types import CLASSIFIER


@pytest.mark.parametrize("name,size,width", [("lenet", 32, None), ("convnet", 32, 2),
                                             ("resnet18", 16, 2), ("resnet50", 32, 2)])
def test_shapes_and_classifier(name, size, width):
  model = models.get_model(name, num_classes=7, image_size=size, width=width)
  variables = jax.jit(model.init)(jax.random.key(0))
  x = jnp.ones((2, size, size, 3))
  logits, state = jax.jit(model.apply)(variables, x)
  features, _ = jax.jit(model.features)(variables, x)
  assert logits.shape == (2, 7)
  kernel = variables["params"][CLASSIFIER]["kernel"]
  assert kernel.shape == (features.shape[1], 7)
  np.testing.assert_allclose(features @ kernel + variables["params"][CLASSIFIER]["bias"],
                             logits, rtol=1e-4, atol=1e-4)
  assert ("batch_stats" in state) == model.has_batchnorm


def test_lenet_is_dlg_lenet():
  model = models.get_model("lenet", num_classes=10)
  variables = model.init(jax.random.key(0))
  leaves = jax.tree.leaves(variables["params"])
  values = np.concatenate([np.ravel(l) for l in leaves])
  assert values.min() >= -0.5 and values.max() <= 0.5 and values.std() > 0.25
  assert variables["params"]["conv0"]["kernel"].shape == (5, 5, 3, 12)
  assert variables["params"][CLASSIFIER]["kernel"].shape == (768, 10)


def test_batchnorm_uses_batch_statistics_in_training_mode():
  model = models.get_model("convnet", num_classes=3, width=2)
  variables = model.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3)) * 3 + 1
  train_logits, state = jax.jit(model.apply)(variables, x)
  eval_logits, _ = jax.jit(lambda v, a: model.apply(v, a, train=False))(variables, x)
  assert not np.allclose(train_logits, eval_logits)
  # running mean moved toward the batch mean
  assert not np.allclose(state["batch_stats"]["bn0"]["mean"],
                         variables["batch_stats"]["bn0"]["mean"])


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "softplus"])
def test_activation_selectable(activation):
  model = models.get_model("lenet", num_classes=3, image_size=8, activation=activation)
  assert model.module.activation == models.Activation(activation)


def test_bad_model_arguments():
  with pytest.raises(ValueError, match="unknown model"):
    models.get_model("vgg", num_classes=10)
  with pytest.raises(ValueError, match="num_classes"):
    models.get_model("lenet", num_classes=0)
  with pytest.raises(ValueError, match="32x32"):
    models.get_model("convnet", num_classes=10, image_size=64)
