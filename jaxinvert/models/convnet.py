"""The ConvNet of Inverting Gradients (Geiping et al., NeurIPS 2020).

Eight 3x3 convolutions of width w, 2w, 2w, 4w, 4w, 4w | pool | 4w, 4w | pool (max
pooling 3x3, stride 3), each followed by BatchNorm (optional) and the activation,
then a dense classifier on the 3x3x4w = 36w features of a 32x32 image. It is the
"ConvNet" of breaching. An optional hidden dense layer before the classifier
(``hidden > 0``) gives the variant used in label-restoration probes.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxinvert.models.common import (Activation, ConvImpl, batch_norm, torch_conv,
                                     torch_default_kernel_init)
from jaxinvert.types import CLASSIFIER

_WIDTH_MULTIPLIERS = (1, 2, 2, 4, 4, 4, "pool", 4, 4, "pool")


class ConvNet(nn.Module):
  """Geiping et al.'s ConvNet.

  Attributes:
    num_classes: logits.
    width: base channel count w (64 in Inverting Gradients, 32 in breaching's tests).
    activation: nonlinearity (ReLU in the paper).
    use_batchnorm: BatchNorm after each convolution (True in the paper).
    hidden: units of an extra dense + activation layer before the classifier; 0 = none.
    conv_impl: how convolutions are differentiated (`ConvImpl`).
  """

  num_classes: int
  width: int = 64
  activation: Activation = Activation.RELU
  use_batchnorm: bool = True
  hidden: int = 0
  conv_impl: ConvImpl = ConvImpl.XLA

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True, return_features: bool = False):
    conv_index = 0
    for item in _WIDTH_MULTIPLIERS:
      if item == "pool":
        x = nn.max_pool(x, (3, 3), strides=(3, 3))
        continue
      x = torch_conv(item * self.width, (3, 3), padding=((1, 1), (1, 1)),
                     use_bias=True, impl=self.conv_impl, name=f"conv{conv_index}")(x)
      if self.use_batchnorm:
        x = batch_norm(train, name=f"bn{conv_index}")(x)
      x = self.activation(x)
      conv_index += 1
    x = x.reshape((x.shape[0], -1))
    if self.hidden:
      x = self.activation(nn.Dense(self.hidden, kernel_init=torch_default_kernel_init,
                                   name="hidden")(x))
    if return_features:
      return x
    return nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init, name=CLASSIFIER)(x)
