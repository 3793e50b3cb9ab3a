"""Attack-step throughput against the machine's limit (and a PyTorch reference).

Command:
  python -m experiments.bench_speed --workdir=workdirs/bench_speed
Cases of issue 6: Geiping et al.'s ConvNet (width 64, BatchNorm) at B=1 and B=4 and
ResNet-18 at B=4, FedSGD, cosine matching + TV, signed Adam; and the ConvNet at B=4
in FedAvg with 4 local steps (2 epochs x 2 mini-batches), unrolled. Per case: restart-
iterations per second (steady state, compilation excluded), the step's FLOPs (XLA's
compiled cost analysis), this machine's f32 matmul FLOP/s measured in the same run, and
the PSNR after `psnr_iterations` steps on the same images.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "convnet"
  c.width = 64
  c.label_dist = "unique"
  c.label_source = "true"
  c.optimizer = "signed_adam"
  c.lr = 0.1
  c.distance = "cosine"
  c.box = "clip"
  c.tv = 1e-4
  c.local_lr = 0.01
  # case name: overrides
  c.cases = ("convnet_b1:batch_size=1;convnet_b4:batch_size=4;"
             "resnet18_b4:model=resnet18,batch_size=4;"
             "fedavg4_convnet_b4:batch_size=4,setting=fedavg,local_epochs=2,local_batch_size=2")
  c.warmup = 1
  c.timed_steps = 3
  c.psnr_iterations = 0        # 0 = skip the quality run
  c.matmul_size = 2048
  c.reference_python = ""      # a Python with torch + breaching (requirements-bench.txt); '' = none
  c.reference = "breaching"    # breaching (plain PyTorch where it cannot run) | torch
  return c
