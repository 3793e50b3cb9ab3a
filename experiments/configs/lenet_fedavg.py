"""FedAvg: LeNet, 4 photos, 2 local epochs of 2 mini-batches (lr 0.1), attack by unrolling.

Command:
  python -m experiments.reconstruct --config=experiments/configs/lenet_fedavg.py \
      --workdir=workdirs/lenet_fedavg
  (Geng et al.'s treatment instead: --config.fedavg_method=approx)
The server sees only the weights after local training. `unroll` simulates the whole
local training on the dummy images (Dimitrov et al., TMLR 2022) and matches the weight
change; `approx` matches the update divided by local_lr x steps as one FedSGD gradient.
Labels come from the FedAvg label restoration (average gradient, statistics along the
trajectory). Expected: unroll >= 20 dB and above approx on the same budget.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "lenet"
  c.batch_size = 4
  c.label_dist = "unique"
  c.setting = "fedavg"
  c.local_epochs = 2
  c.local_batch_size = 2
  c.local_lr = 0.1
  c.fedavg_method = "unroll"
  c.fedavg_order = "known"
  c.label_source = "restored"
  c.optimizer = "lbfgs"
  c.distance = "l2"
  c.tv = 0.1
  c.iterations = 1500
  c.log_every = 250
  c.patience = 3
  c.tol = 1e-3
  return c
