"""Train a victim on the offline photos (or a TFDS dataset) and checkpoint chosen steps.

Command:
  python -m experiments.train_victim --config=experiments/configs/train_victim.py \
      --workdir=workdirs/victim_convnet
Expected: checkpoints at steps 0, 100 and 1000 under workdir/checkpoints, train and
held-out accuracy per saved step in results.json, and training_curve.png.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "convnet"
  c.width = 32
  c.train_batch_size = 32    # training mini-batch
  c.train_pool = 64          # photos: training images per class (a finite training set)
  c.eval_pool = 16           # photos: held-out images per class
  c.train_lr = 0.01
  c.momentum = 0.9
  c.train_steps = 1000
  c.save_steps = "0,100,1000"
  c.log_every = 50
  return c
