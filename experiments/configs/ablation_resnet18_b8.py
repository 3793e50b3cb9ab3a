"""Ablation of the image priors on ResNet-18 (CIFAR stem), B=8 (FedSGD).

Command:
  python -m experiments.sweep --config=experiments/configs/ablation_resnet18_b8.py \
      --workdir=workdirs/ablation_resnet18_b8
The cells, recipe and budget of `ablation_convnet_b8` (true labels, cosine matching,
signed Adam, [0, 1] box, width 16, 1000 iterations) on ResNet-18 instead of the ConvNet.
"""

from experiments.configs import ablation_convnet_b8


def get_config():
  c = ablation_convnet_b8.get_config()
  c.model = "resnet18"
  c.log_every = 100
  return c
