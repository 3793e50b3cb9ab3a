"""The LeNet of DLG (Zhu et al., NeurIPS 2019) and iDLG (Zhao et al., 2020).

Three 5x5 convolutions of 12 channels (strides 2, 2, 1, PyTorch padding 2), each
followed by a sigmoid, then one dense classifier. Every weight and bias is drawn
from U(-0.5, 0.5), DLG's initialisation: with it the gradient of a single image is
invertible almost exactly, which is what the B=1 demo reproduces.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxinvert.models.common import Activation, ConvImpl, uniform_init
from jaxinvert.types import CLASSIFIER


class LeNet(nn.Module):
  """DLG's LeNet.

  Attributes:
    num_classes: logits.
    width: channels of each convolution (12 in DLG).
    activation: nonlinearity after each convolution (sigmoid in DLG).
    init_scale: weights and biases drawn from U(-init_scale, init_scale).
    conv_impl: how convolutions are differentiated (`ConvImpl`).
  """

  num_classes: int
  width: int = 12
  activation: Activation = Activation.SIGMOID
  init_scale: float = 0.5
  conv_impl: ConvImpl = ConvImpl.XLA

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True, return_features: bool = False):
    del train  # no BatchNorm or dropout
    init = uniform_init(self.init_scale)
    for i, stride in enumerate((2, 2, 1)):
      x = nn.Conv(self.width, (5, 5), strides=(stride, stride), padding=((2, 2), (2, 2)),
                  kernel_init=init, bias_init=init, conv_general_dilated=self.conv_impl.fn,
                  name=f"conv{i}")(x)
      x = self.activation(x)
    x = x.reshape((x.shape[0], -1))
    if return_features:
      return x
    return nn.Dense(self.num_classes, kernel_init=init, bias_init=init, name=CLASSIFIER)(x)
