"""ResNet-18 (CIFAR stem) at 32x32, a batch of 8 (FedSGD), labels restored zero-shot.

Command:
  python -m experiments.reconstruct --config=experiments/configs/resnet18_b8.py \
      --workdir=workdirs/resnet18_b8
Cosine matching + TV + BatchNorm statistics (GradInversion), signed Adam, [0, 1] box.
Full budget: width 64, 24000 iterations, 8 restarts with group consistency; the defaults
here fit a 2-core CPU (width 16, 200 iterations). Batch sizes 1..32: --config.batch_size.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "resnet18"
  c.width = 16
  c.batch_size = 8
  c.label_dist = "random"
  c.optimizer = "signed_adam"
  c.lr = 0.025                # breaching's 0.1 in its normalised pixels (std ~0.25)
  c.distance = "cosine"
  c.box = "clip"
  c.tv = 0.8                  # breaching's 0.2 in its normalised pixels (/0.25)
  c.bn = 0.0
  c.iterations = 200
  c.restarts = 1
  c.log_every = 50
  return c
