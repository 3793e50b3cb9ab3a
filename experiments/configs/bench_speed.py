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
  # Timing rounds per case: jaxinvert's timed steps then the references', repeated; the
  # reported ratio is the median of the rounds' ratios (this machine drifts by tens of
  # percent over minutes), its/s the median of each side's rounds.
  c.rounds = 1
  c.psnr_iterations = 0        # 0 = skip the quality run
  c.matmul_size = 2048
  c.reference_python = ""      # a Python with torch + breaching (requirements-bench.txt); '' = none
  c.reference = "breaching"    # breaching (plain PyTorch where it cannot run) | torch
  # Time to quality (needs reference_python): breaching's default attack (invertinggradients:
  # cosine + TV 0.2, signed Adam 0.1, step-lr, 24k iterations) on the case's images, then
  # the wall time jaxinvert's `quality_attack` needs to reach the same PSNR.
  c.quality_cases = ""         # comma-separated case names; '' = none
  c.reference_iterations = 24000   # breaching's default budget
  # jaxinvert's attack: the case's (cosine, signed Adam, clip box) with breaching's default
  # weights carried from its normalised pixel space (std ~0.25) to [0, 1]: step 0.1 x 0.25,
  # TV 0.2 / 0.25; Gaussian start as breaching's. `iterations` (the step schedule's
  # length) defaults to reference_iterations; override it here too.
  c.quality_attack = "tv=0.8,lr=0.025,init=gaussian"
  c.quality_max_factor = 1.0   # give up after this x breaching's seconds
  # log_every (base config): jaxinvert's PSNR is read, and breaching's candidate saved,
  # every log_every steps.
  return c
