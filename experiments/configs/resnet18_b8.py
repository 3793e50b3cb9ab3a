"""ResNet-18 (CIFAR stem) at 32x32, a batch of 8 (FedSGD), labels restored zero-shot.

Command:
  python -m experiments.reconstruct --config=experiments/configs/resnet18_b8.py \
      --workdir=workdirs/resnet18_b8
`convnet_b8`'s attack (Inverting Gradients: cosine matching, TV, signed Adam, [0, 1]
box) on ResNet-18. GradInversion's additions are off by default: BatchNorm statistics
(--config.bn=0.01) and, over restarts, group consistency (--config.group=3) added
+0.1-0.2 and +0.4-0.45 dB in the README's ablation at 1000 steps. Full budget: width
64, 24000 iterations, 8 restarts; the defaults here fit a 2-core CPU (width 16, 200
iterations). Batch sizes 1..32: --config.batch_size.
"""

from experiments.configs import convnet_b8


def get_config():
  c = convnet_b8.get_config()
  c.model = "resnet18"
  c.iterations = 200
  return c
