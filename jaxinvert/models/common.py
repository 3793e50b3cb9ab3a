"""Building blocks shared by the victim networks: activations and BatchNorm."""

from __future__ import annotations

import enum

import flax.linen as nn
import jax
from jax import lax

from jaxinvert.models import conv as conv_lib

#: BatchNorm running-average momentum, flax's convention (PyTorch's 0.1 == 0.9 here).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class Activation(enum.Enum):
  """Nonlinearity of a victim network.

  The literature varies it on purpose: DLG/iDLG use sigmoid (smooth, so the
  gradient of the gradient is informative everywhere), Inverting Gradients and
  ResNets use ReLU, and softplus is the smooth stand-in for ReLU.
  """

  RELU = "relu"
  SIGMOID = "sigmoid"
  SOFTPLUS = "softplus"

  def __call__(self, x: jax.Array) -> jax.Array:
    return _ACTIVATIONS[self](x)


_ACTIVATIONS = {
    Activation.RELU: jax.nn.relu,
    Activation.SIGMOID: jax.nn.sigmoid,
    Activation.SOFTPLUS: jax.nn.softplus,
}


class ConvImpl(enum.Enum):
  """How convolutions are differentiated (same values to float rounding).

  ``XLA``: XLA's own convolutions throughout. ``MATMUL_DW``: forward and input
  gradient by XLA, the weight gradient as matmuls (`jaxinvert.models.conv`),
  faster on XLA:CPU, whose backward-filter convolution is slow.
  """

  XLA = "xla"
  MATMUL_DW = "matmul_dw"

  @property
  def fn(self):
    return lax.conv_general_dilated if self == ConvImpl.XLA else conv_lib.conv_general_dilated


def default_conv_impl(platform: str | None = None) -> ConvImpl:
  """MATMUL_DW on CPU and GPU, XLA on TPU.

  Measured (experiments/bench_restarts.py, ConvNet w64 B=8, seconds per restart-step):
  on an H200 with 4 restarts under `vmap` (the runner's default on one GPU), XLA's
  convolutions took 514.6 ms against 1.9 ms with matmul weight gradients: `vmap` turns
  the weight gradient into a batch-grouped convolution that cuDNN runs very slowly. For a
  single restart without `vmap`, XLA's were about 1.2x faster (1.3 vs 1.6 ms, ConvNet B=1).
  On XLA:CPU the backward-filter convolution is slow even without `vmap`. TPU: not
  measured, XLA kept.

  Args:
    platform: ``'cpu'``, ``'gpu'``, ``'tpu'``; None = `jax.default_backend()`.
  """
  return ConvImpl.XLA if (platform or jax.default_backend()) == "tpu" else ConvImpl.MATMUL_DW


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  """BatchNorm that uses the batch's statistics when ``train`` (as a client does)."""
  return nn.BatchNorm(
      use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def uniform_init(scale: float):
  """U(-scale, scale) initializer, DLG's choice for every LeNet weight and bias."""

  def init(key, shape, dtype=jax.numpy.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


#: PyTorch's default Conv/Linear init (kaiming uniform, a=sqrt(5)) is uniform with
#: bound 1/sqrt(fan_in), which flax expresses as variance_scaling(1/3, fan_in, uniform).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


#: torchvision's (and breaching's) ResNet convolutions: ``kaiming_normal_(mode="fan_out",
#: nonlinearity="relu")``, i.e. N(0, 2 / (k_h k_w C_out)).
resnet_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_conv(*args, impl: ConvImpl, kernel_init=torch_default_kernel_init,
               **kwargs) -> nn.Conv:
  """nn.Conv with a PyTorch init (Conv2d's default unless given) and the chosen
  convolution implementation."""
  return nn.Conv(*args, kernel_init=kernel_init, conv_general_dilated=impl.fn, **kwargs)
