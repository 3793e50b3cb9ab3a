"""Throughput of one sharded attack against devices and restarts per device.

Command:
  python -m experiments.bench_scaling --workdir=workdirs/bench_scaling
The step of `bench_speed`'s ConvNet B=4 case (Geiping et al.'s ConvNet, width 64,
FedSGD, cosine matching + TV, signed Adam), its copies split over a mesh of the first
n devices (`runner.Strategy.SHARDED`) for every n in ``devices`` and every number of
restarts per device in ``restarts_per_device``.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "convnet"
  c.width = 64
  c.batch_size = 4
  c.label_dist = "unique"
  c.label_source = "true"
  c.optimizer = "signed_adam"
  c.lr = 0.025
  c.distance = "cosine"
  c.box = "clip"
  c.tv = 0.8
  c.devices = ""                 # comma-separated device counts; '' = 1, 2, 4, ... up to all
  c.restarts_per_device = "1,4,16"
  # steps fused in one jitted lax.scan; 1 as `runner.default_steps_per_call` on CPU/GPU
  # (10 made one copy 1.5x slower on an H200, docs/speed.md "Fourth lease")
  c.steps_per_call = 1
  c.warmup = 1                   # calls (compilation), not timed
  c.iterations = 20              # timed steps (a multiple of steps_per_call)
  return c
