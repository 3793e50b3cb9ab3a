"""Seconds per restart-step of each execution strategy (and conv implementation).

Command:
  python -m experiments.bench_restarts --workdir=workdirs/bench_restarts
The step of issue 4's probe: ConvNet width 32, B=8, 32x32 photos, cosine gradient
matching + TV, signed Adam, one double backprop per restart-step. Each variant runs
``warmup`` steps (compilation), then ``iterations`` timed steps; the time over
``iterations x copies`` is its seconds per restart-step.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "convnet"
  c.width = 32
  c.batch_size = 8
  c.label_dist = "unique"
  c.label_source = "true"
  c.optimizer = "signed_adam"
  c.distance = "cosine"
  c.tv = 1e-4
  c.restarts = 2
  c.warmup = 1
  c.iterations = 3
  c.conv_impls = "xla,matmul_dw"
  # variants: strategy[:steps fused per jitted call]
  c.variants = "host_loop,host_loop:3,vmap,map,vmap:3"
  c.repeats = 1
  return c
