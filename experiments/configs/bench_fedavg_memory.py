"""Memory and time of the unrolled FedAvg attack step against local steps, remat on/off.

Command:
  python -m experiments.bench_fedavg_memory --workdir=workdirs/bench_fedavg_memory
LeNet, 8 photos, mini-batches of 2, local epochs 1, 2, 4, 8 (4 to 32 local steps).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.model = "lenet"
  c.width = 0
  c.image_size = 32
  c.batch_size = 8
  c.local_batch_size = 2
  c.epochs = "1,2,4,8"
  c.local_lr = 0.1
  c.repeats = 3
  c.seed = 0
  return c
