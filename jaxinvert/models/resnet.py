"""ResNets (He et al., CVPR 2016) as used in gradient-inversion papers.

* ``resnet18``: BasicBlocks [2, 2, 2, 2] with the CIFAR stem (one 3x3 convolution, no
  max pooling), for 32x32 images; GradInversion, Geiping et al. and Geng et al. attack it.
* ``resnet50``: Bottlenecks [3, 4, 6, 3] with the ImageNet stem (7x7 stride 2
  convolution and 3x3 stride 2 max pooling), for 224x224 images.

Every convolution is followed by BatchNorm, which runs on batch statistics in
training mode (as on a client computing its update). Convolutions are initialised as in
torchvision and breaching (Kaiming normal, fan-out), the classifier as PyTorch's Linear.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from jaxinvert.models.common import (Activation, ConvImpl, batch_norm, resnet_kernel_init,
                                     torch_conv, torch_default_kernel_init)
from jaxinvert.types import CLASSIFIER


def _conv(features: int, kernel: int, stride: int, impl: ConvImpl) -> nn.Conv:
  pad = kernel // 2
  return torch_conv(features, (kernel, kernel), strides=(stride, stride),
                    padding=((pad, pad), (pad, pad)), use_bias=False, impl=impl,
                    kernel_init=resnet_kernel_init)


class BasicBlock(nn.Module):
  features: int
  stride: int
  activation: Activation
  impl: ConvImpl

  @nn.compact
  def __call__(self, x, train: bool):
    residual = x
    y = _conv(self.features, 3, self.stride, self.impl)(x)
    y = self.activation(batch_norm(train)(y))
    y = _conv(self.features, 3, 1, self.impl)(y)
    y = batch_norm(train)(y)
    if residual.shape != y.shape:
      residual = batch_norm(train)(_conv(self.features, 1, self.stride, self.impl)(residual))
    return self.activation(y + residual)


class Bottleneck(nn.Module):
  features: int
  stride: int
  activation: Activation
  impl: ConvImpl
  expansion: int = 4

  @nn.compact
  def __call__(self, x, train: bool):
    residual = x
    y = self.activation(batch_norm(train)(_conv(self.features, 1, 1, self.impl)(x)))
    y = self.activation(batch_norm(train)(_conv(self.features, 3, self.stride, self.impl)(y)))
    y = batch_norm(train)(_conv(self.features * self.expansion, 1, 1, self.impl)(y))
    if residual.shape != y.shape:
      residual = batch_norm(train)(
          _conv(self.features * self.expansion, 1, self.stride, self.impl)(residual))
    return self.activation(y + residual)


class ResNet(nn.Module):
  """A ResNet with a CIFAR (3x3) or ImageNet (7x7 + max pool) stem.

  Attributes:
    num_classes: logits.
    stage_sizes: blocks per stage.
    bottleneck: Bottleneck blocks (ResNet-50) instead of BasicBlocks (ResNet-18).
    width: channels of the first stage (64 in the papers).
    imagenet_stem: 7x7 stride-2 convolution and max pooling, for 224x224 inputs.
    activation: nonlinearity (ReLU in the papers).
    conv_impl: how convolutions are differentiated (`ConvImpl`).
  """

  num_classes: int
  stage_sizes: Sequence[int]
  bottleneck: bool = False
  width: int = 64
  imagenet_stem: bool = False
  activation: Activation = Activation.RELU
  conv_impl: ConvImpl = ConvImpl.XLA

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True, return_features: bool = False):
    if self.imagenet_stem:
      x = self.activation(batch_norm(train)(_conv(self.width, 7, 2, self.conv_impl)(x)))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = self.activation(batch_norm(train)(_conv(self.width, 3, 1, self.conv_impl)(x)))
    block = Bottleneck if self.bottleneck else BasicBlock
    for stage, size in enumerate(self.stage_sizes):
      for i in range(size):
        stride = 2 if stage > 0 and i == 0 else 1
        x = block(self.width * 2**stage, stride, self.activation, self.conv_impl)(x, train)
    x = x.mean(axis=(1, 2))
    if return_features:
      return x
    return nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init, name=CLASSIFIER)(x)
