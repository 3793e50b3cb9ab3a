"""ResNet-50 (ImageNet stem) at 224x224, a batch of 8 (FedSGD), labels restored zero-shot.

Command:
  python -m experiments.reconstruct --config=experiments/configs/resnet50_b8.py \
      --workdir=workdirs/resnet50_b8
GradInversion's setting: cosine matching, TV, BatchNorm statistics, group consistency
over restarts. Full budget: width 64, 20000 iterations, 8 restarts, batch 8..48
(--config.batch_size); the defaults run on a 2-core CPU in minutes (width 8, 20
iterations, 1 restart) and only show that the pipeline works at this size.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "resnet50"
  c.width = 8
  c.image_size = 224
  c.batch_size = 8
  c.label_dist = "random"
  c.optimizer = "signed_adam"
  c.lr = 0.025                # breaching's 0.1 in its normalised pixels (std ~0.25)
  c.distance = "cosine"
  c.box = "clip"
  c.tv = 0.8                  # breaching's 0.2 in its normalised pixels (/0.25)
  c.iterations = 20
  c.restarts = 1
  c.log_every = 10
  return c
