"""Ablation of the image priors on Geiping et al.'s ConvNet, B=8 (FedSGD).

Command:
  python -m experiments.sweep --config=experiments/configs/ablation_convnet_b8.py \
      --workdir=workdirs/ablation_convnet_b8
True labels (to isolate the priors), cosine matching, signed Adam (step 0.025), [0, 1]
box; TV 0.8 and step 0.025 are breaching's defaults (0.2 and 0.1 in CIFAR-normalised
pixels) carried to [0, 1] pixels. Cells:
no prior, TV, TV + BatchNorm statistics (GradInversion), TV + BN + 2 restarts (lowest
loss picked), and the same 2 restarts with group consistency 1 and 3 (GradInversion; its
weight must be of the order of TV's to act, see `jaxinvert.priors.group_consistency`);
then TV + BN without the [0, 1] box, and with isotropic instead of anisotropic TV. Sized
for a 2-core CPU (width 16, 1000 iterations); the paper-scale budget is width 64, 24000
iterations, 8 restarts (--config.width=64 --config.iterations=24000 --config.restarts=8),
for an accelerator.
"""

from experiments.configs import convnet_b8


def get_config():
  c = convnet_b8.get_config()
  c.label_source = "true"
  c.iterations = 1000
  c.log_every = 50
  c.cells = ";".join([
      "tv=0.0",
      "tv=0.8",
      "tv=0.8,bn=0.01",
      "tv=0.8,bn=0.01,restarts=2",
      "tv=0.8,bn=0.01,restarts=2,group=1.0",
      "tv=0.8,bn=0.01,restarts=2,group=3.0",
      "tv=0.8,bn=0.01,box=none",
      "tv=0.8,bn=0.01,tv_kind=isotropic",
  ])
  return c
