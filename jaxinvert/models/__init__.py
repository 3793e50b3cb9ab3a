"""Victim networks: `get_model(name, ...)` returns a `jaxinvert.types.Model`."""

from __future__ import annotations

from jaxinvert.models.common import Activation, BN_MOMENTUM, ConvImpl, default_conv_impl
from jaxinvert.models.convnet import ConvNet
from jaxinvert.models.lenet import LeNet
from jaxinvert.models.resnet import ResNet
from jaxinvert.types import Model

MODEL_NAMES = ("lenet", "convnet", "resnet18", "resnet50")


def get_model(
    name: str,
    *,
    num_classes: int,
    image_size: int = 32,
    channels: int = 3,
    width: int | None = None,
    activation: Activation | str | None = None,
    batchnorm: bool = True,
    hidden: int = 0,
    conv_impl: ConvImpl | str | None = None,
) -> Model:
  """Builds a victim model by name.

  Args:
    name: one of ``MODEL_NAMES``.
    num_classes: logits.
    image_size: height = width of the NHWC input (32 for CIFAR, 224 for ImageNet).
    channels: input channels.
    width: base width; ``None`` = the paper's (12 LeNet, 64 ConvNet and ResNets).
    activation: nonlinearity; ``None`` = the paper's (sigmoid LeNet, ReLU otherwise).
    batchnorm: BatchNorm in the ConvNet (the ResNets always have it, LeNet never).
    hidden: ConvNet only: units of an extra dense layer before the classifier.
    conv_impl: how convolutions are differentiated; None = `default_conv_impl()`
      (matmul weight gradients on CPU and GPU, XLA's convolutions on TPU).

  Returns:
    A `Model` whose ``apply``/``features`` are pure functions of (variables, images).

  Raises:
    ValueError: unknown name, a size or width that is not positive, or fewer than 2
      classes.
  """
  if name not in MODEL_NAMES:
    raise ValueError(f"model: unknown model {name!r}; choose one of {MODEL_NAMES}")
  for field, value in (("num_classes", num_classes), ("image_size", image_size),
                       ("channels", channels)):
    if int(value) <= 0:
      raise ValueError(f"{field} must be positive, got {value}")
  if num_classes < 2:
    raise ValueError(f"num_classes must be at least 2, got {num_classes}: the softmax "
                     "cross-entropy of a 1-class head is 0 whatever the input, so its "
                     "gradient, the update a client shares, is zero")
  if width is not None and width <= 0:
    raise ValueError(f"width must be positive, got {width}")
  if hidden < 0:
    raise ValueError(f"hidden must be >= 0, got {hidden}")
  act = Activation(activation) if activation is not None else None
  impl = ConvImpl(conv_impl) if conv_impl is not None else default_conv_impl()
  shape = (image_size, image_size, channels)
  if name == "lenet":
    module = LeNet(num_classes, width=width or 12, activation=act or Activation.SIGMOID,
                   conv_impl=impl)
    has_bn = False
  elif name == "convnet":
    if image_size != 32:
      raise ValueError(f"image_size: the ConvNet is defined for 32x32 images, got {image_size}")
    module = ConvNet(num_classes, width=width or 64, activation=act or Activation.RELU,
                     use_batchnorm=batchnorm, hidden=hidden, conv_impl=impl)
    has_bn = batchnorm
  elif name == "resnet18":
    module = ResNet(num_classes, stage_sizes=(2, 2, 2, 2), width=width or 64,
                    activation=act or Activation.RELU, conv_impl=impl)
    has_bn = True
  else:
    module = ResNet(num_classes, stage_sizes=(3, 4, 6, 3), bottleneck=True, width=width or 64,
                    imagenet_stem=True, activation=act or Activation.RELU, conv_impl=impl)
    has_bn = True
  return Model(name=name, module=module, image_shape=shape, num_classes=num_classes,
               has_batchnorm=has_bn)


__all__ = ["Activation", "BN_MOMENTUM", "ConvImpl", "ConvNet", "default_conv_impl", "LeNet",
           "MODEL_NAMES", "Model", "ResNet", "get_model"]
