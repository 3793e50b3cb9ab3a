import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinvert import models, victim
from jaxinvert.types import CLASSIFIER


@pytest.mark.parametrize("name,size,width", [("lenet", 32, None), ("convnet", 32, 2),
                                             ("resnet18", 16, 2), ("resnet50", 32, 2)])
def test_shapes_and_classifier(name, size, width):
  model = models.get_model(name, num_classes=7, image_size=size, width=width)
  variables = jax.jit(model.init)(jax.random.key(0))
  x = jnp.ones((2, size, size, 3))
  # One program for both (compilation is most of this test's time).
  (logits, state), (features, _) = jax.jit(
      lambda v, x: (model.apply(v, x), model.features(v, x)))(variables, x)
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
  with pytest.raises(ValueError, match="num_classes must be at least 2, got 1"):
    models.get_model("lenet", num_classes=1)
  with pytest.raises(ValueError, match="32x32"):
    models.get_model("convnet", num_classes=10, image_size=64)


@pytest.mark.parametrize("name,size,width", [("lenet", 32, None), ("convnet", 32, 2)])
def test_conv_impls_agree_to_second_order(name, size, width):
  """The matmul weight gradient must give the attack the same gradient-of-gradient."""
  xla = models.get_model(name, num_classes=5, image_size=size, width=width,
                         conv_impl=models.ConvImpl.XLA)
  mm = models.get_model(name, num_classes=5, image_size=size, width=width,
                        conv_impl=models.ConvImpl.MATMUL_DW)
  variables = xla.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (2, size, size, 3))
  y = jnp.array([1, 3])

  def attack_grad(model):
    def param_grad(images):
      def loss(params):
        logits, _ = model.apply({**variables, "params": params}, images)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
      return jax.grad(loss)(variables["params"])

    def match(images):
      return sum(jnp.sum(g ** 2) for g in jax.tree.leaves(param_grad(images)))
    return jax.jit(lambda i: (param_grad(i), jax.grad(match)(i)))(x)

  (g_xla, dx_xla), (g_mm, dx_mm) = attack_grad(xla), attack_grad(mm)
  # Conv biases before BatchNorm have a zero gradient analytically: what is left is
  # rounding, so the absolute tolerance is relative to the largest gradient entry.
  g_scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g_xla))
  for a, b in zip(jax.tree.leaves(g_xla), jax.tree.leaves(g_mm)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6 * g_scale)
  scale = np.abs(np.asarray(dx_xla)).max()
  assert scale > 0
  np.testing.assert_allclose(dx_mm, dx_xla, rtol=0, atol=2e-4 * scale)


def test_default_conv_impl_per_backend():
  assert models.default_conv_impl("cpu") == models.ConvImpl.MATMUL_DW
  assert models.default_conv_impl("gpu") == models.ConvImpl.MATMUL_DW
  assert models.default_conv_impl("tpu") == models.ConvImpl.XLA


@pytest.mark.parametrize("kernel,stride,pad", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (7, 2, 3),
                                               (5, 2, 2)])
def test_matmul_weight_gradient_conv_matches_xla(kernel, stride, pad):
  """Every conv shape of the ResNets/LeNet: values, gradients and gradients of gradients."""
  from jax import lax
  from jaxinvert.models import conv as conv_lib
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4))
  padding = ((pad, pad), (pad, pad))

  def double(conv):
    def inner(x, w):
      return jnp.sum(jnp.sin(conv(x, w, (stride, stride), padding, dimension_numbers=dn)))
    def outer(x, w):
      return jnp.sum(jax.grad(inner, argnums=1)(x, w) ** 2)
    return jax.jit(jax.grad(outer, argnums=(0, 1)))(x, w)

  for a, b in zip(double(lax.conv_general_dilated), double(conv_lib.conv_general_dilated)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())

  def through_input_gradient(conv):  # the weights' path of unrolled FedAvg
    def inner(x, w):
      return jnp.sum(jnp.sin(conv(x, w, (stride, stride), padding, dimension_numbers=dn)))
    def outer(x, w):
      return jnp.sum(jnp.cos(jax.grad(inner, argnums=0)(x, w)))
    return jax.jit(jax.grad(outer, argnums=(0, 1)))(x, w)

  for a, b in zip(through_input_gradient(lax.conv_general_dilated),
                  through_input_gradient(conv_lib.conv_general_dilated)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_resnet_convs_initialised_as_torchvision():
  """Kaiming normal, fan-out (std sqrt(2 / (9 C_out)) for a 3x3 conv), as breaching's."""
  model = models.get_model("resnet18", num_classes=10, image_size=16, width=16)
  params = model.init(jax.random.key(0))["params"]
  kernels = [l for p, l in jax.tree_util.tree_leaves_with_path(params)
             if "kernel" in jax.tree_util.keystr(p) and l.ndim == 4 and l.shape[:2] == (3, 3)]
  big = [k for k in kernels if k.shape[-1] >= 64]
  assert big
  for k in big:
    expected = np.sqrt(2.0 / (9 * k.shape[-1]))
    assert abs(float(np.std(k)) - expected) < 0.1 * expected
    # PyTorch's Conv2d default would give sqrt(1 / (27 C_in)): sqrt(6 C_in / C_out) smaller
    assert float(np.std(k)) > 1.5 * np.sqrt(1.0 / (27 * k.shape[-2]))


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 9, 9, 3), (3, 3), (1, 1), ((1, 1), (1, 1))),
    ((2, 9, 10, 3), (3, 3), (2, 1), ((1, 1), (0, 2))),   # row stride, asymmetric pad
    ((3, 6, 6, 4), (1, 1), (1, 1), ((0, 0), (0, 0))),
    ((2, 8, 8, 3), (5, 5), (1, 1), ((2, 2), (2, 2))),
    ((2, 9, 9, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),   # taps only
])
def test_weight_gradient_forms_match_xla(shape, kernel, strides, padding):
  """Both matmul forms of the weight gradient against XLA's backward-filter convolution."""
  from jax import lax
  from jaxinvert.models import conv as conv_lib
  x = jax.random.normal(jax.random.key(0), shape)
  w = jnp.zeros((*kernel, shape[-1], 5))
  conv = lambda w: lax.conv_general_dilated(x, w, strides, padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
  out, vjp = jax.vjp(conv, w)
  ct = jax.random.normal(jax.random.key(1), out.shape)
  (expected,) = vjp(ct)
  forms = [conv_lib._tap_weight_gradient, conv_lib.weight_gradient]
  if strides[1] == 1:
    forms.append(conv_lib._block_weight_gradient)
  scale = np.abs(np.asarray(expected)).max()
  for form in forms:
    got = form(x, ct, w.shape, strides, padding)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale, err_msg=form.__name__)


def _conv_operands(jaxpr) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """(lhs shape, rhs shape) of every convolution in a jaxpr and its sub-jaxprs."""
  from jax.extend import core
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      found.append((eqn.invars[0].aval.shape, eqn.invars[1].aval.shape))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, core.ClosedJaxpr):
          found += _conv_operands(sub.jaxpr)
        elif isinstance(sub, core.Jaxpr):
          found += _conv_operands(sub)
  return found


def test_no_backward_filter_convolution_when_weights_depend_on_the_input():
  """Unrolled FedAvg: the second local step's weights depend on the images, so the attack
  differentiates its forward pass with respect to the weights. With the matmul weight
  gradient every convolution left must have a kernel-sized right operand."""
  from jaxinvert.models import conv as conv_lib
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))

  def attack_loss(conv, x):
    loss = lambda w, x: jnp.sum(jnp.sin(conv(x, w, (1, 1), "SAME", dimension_numbers=dn)))
    w1 = w - 0.1 * jax.grad(loss)(w, x)        # first local step
    g2 = jax.grad(loss)(w1, x)                 # second local step, at weights that depend on x
    return jnp.sum(g2 ** 2)

  for conv, expect_filter_convs in ((jax.lax.conv_general_dilated, True),
                                    (conv_lib.conv_general_dilated, False)):
    jaxpr = jax.make_jaxpr(jax.grad(functools.partial(attack_loss, conv)))(x).jaxpr
    operands = _conv_operands(jaxpr)
    assert operands
    filter_convs = [o for o in operands if o[1][:2] != (3, 3)]
    assert bool(filter_convs) == expect_filter_convs, (conv, filter_convs)


def test_attack_gradient_finite_on_wide_convnet():
  """The double backward of a FedSGD update through the w64 ConvNet stays finite.

  A reshape + max pool (commit 1b2434b, reverted) made it NaN here: max's derivative
  in JAX locates the maximum by equality with the pooled value, and XLA:CPU recomputed
  the pool's operand in another fusion with different rounding, so no element matched,
  the tie count was 0 and the cotangent 0/0."""
  model = models.get_model("convnet", num_classes=10, image_size=32, width=64)
  variables = model.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
  y = jnp.array([3])
  loss = lambda x: sum(jnp.sum(g ** 2) for g in jax.tree.leaves(
      victim.fedsgd_update(model.apply, variables, x, y)))
  grad = jax.jit(jax.grad(loss))(x)
  assert bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.max(jnp.abs(grad))) > 0
