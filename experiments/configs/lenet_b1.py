"""The demo: one photo, DLG's sigmoid LeNet, FedSGD, label restored by iDLG, L-BFGS.

Command:
  python -m experiments.reconstruct --workdir=workdirs/demo
Expected: PSNR >= 40 dB (near-exact, as DLG reports) in well under a minute of
optimisation on a 2-core CPU; `reconstruction.png` shows the photo and its
reconstruction side by side.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "lenet"
  c.batch_size = 1
  c.label_dist = "unique"
  c.setting = "fedsgd"
  c.label_source = "restored"
  c.optimizer = "lbfgs"
  c.distance = "l2"
  c.iterations = 6000
  c.log_every = 250
  c.patience = 2           # converged: 2 chunks of 250 steps without 0.1 % progress
  c.tol = 1e-3
  return c
