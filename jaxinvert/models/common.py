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
  """How convolutions are computed and differentiated (same values to float rounding).

  ``XLA``: XLA's own convolutions throughout. ``MATMUL_DW``: forward and input
  gradient by XLA, the weight gradient as per-tap matmuls (`jaxinvert.models.conv`);
  fastest for FedSGD attacks on XLA:CPU, whose backward-filter convolution is slow.
  ``MATMUL``: every convolution as per-tap matmuls; fastest on XLA:CPU through an
  unrolled FedAvg update (convolutions inside `lax.scan`).
  """

  XLA = "xla"
  MATMUL_DW = "matmul_dw"
  MATMUL = "matmul"

  @property
  def fn(self):
    return {ConvImpl.XLA: lax.conv_general_dilated,
            ConvImpl.MATMUL_DW: conv_lib.conv_general_dilated,
            ConvImpl.MATMUL: conv_lib.matmul_conv_general_dilated}[self]


def default_conv_impl(platform: str | None = None, *, unrolled: bool = False) -> ConvImpl:
  """The fastest implementation we measured for a backend and a threat model.

  Args:
    platform: ``'cpu'``, ``'gpu'``, ``'tpu'``; None = `jax.default_backend()`.
    unrolled: whether the attack differentiates through unrolled local training
      (FedAvg), rather than through one gradient (FedSGD).

  Returns:
    On CPU, ``MATMUL`` for unrolled attacks and ``MATMUL_DW`` otherwise; ``XLA`` on
    accelerators (cuDNN/TPU convolutions and their gradients are fast).
  """
  if (platform or jax.default_backend()) != "cpu":
    return ConvImpl.XLA
  return ConvImpl.MATMUL if unrolled else ConvImpl.MATMUL_DW


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


def torch_conv(*args, impl: ConvImpl, **kwargs) -> nn.Conv:
  """nn.Conv with PyTorch's default init and the chosen convolution implementation."""
  return nn.Conv(*args, kernel_init=torch_default_kernel_init,
                 conv_general_dilated=impl.fn, **kwargs)
