"""ResNet-50 (ImageNet stem) at 224x224, a batch of 8 (FedSGD), labels restored zero-shot.

Command:
  python -m experiments.reconstruct --config=experiments/configs/resnet50_b8.py \
      --workdir=workdirs/resnet50_b8
GradInversion's setting (ImageNet size, a ResNet-50) with `convnet_b8`'s attack: cosine
matching, TV, signed Adam, [0, 1] box. GradInversion's priors are opt-in:
--config.bn=0.01 (BatchNorm statistics) and, with --config.restarts=R > 1,
--config.group=W (group consistency). Full budget: width 64, 20000 iterations, 8
restarts, batch 8..48 (--config.batch_size); the defaults run on a 2-core CPU in minutes
(width 8, 20 iterations, 1 restart) and only show that the pipeline works at this size.
"""

from experiments.configs import convnet_b8


def get_config():
  c = convnet_b8.get_config()
  c.model = "resnet50"
  c.width = 8
  c.image_size = 224
  c.iterations = 20
  c.log_every = 10
  return c
