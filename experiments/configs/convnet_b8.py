"""Geiping et al.'s ConvNet at 32x32, a batch of 8 (FedSGD), labels restored zero-shot.

Command:
  python -m experiments.reconstruct --config=experiments/configs/convnet_b8.py \
      --workdir=workdirs/convnet_b8
The attack of Inverting Gradients: cosine matching, TV, signed Adam with a step
schedule, images projected to [0, 1]. Full budget (the paper's): width 64, 24000
iterations, 8 restarts; the defaults here are sized for a 2-core CPU (width 16, 400
iterations, 1 restart) and give a low but honest PSNR. Batch sizes 1..32:
--config.batch_size=B.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "convnet"
  c.width = 16
  c.batch_size = 8
  c.label_dist = "random"
  c.optimizer = "signed_adam"
  c.lr = 0.025                # breaching's 0.1 in its normalised pixels (std ~0.25)
  c.distance = "cosine"
  c.box = "clip"
  c.tv = 0.8                  # breaching's 0.2 in its normalised pixels (/0.25)
  c.bn = 0.0
  c.iterations = 400
  c.restarts = 1
  c.log_every = 50
  return c
