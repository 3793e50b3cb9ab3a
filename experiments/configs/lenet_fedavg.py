"""FedAvg: LeNet, 4 photos, 2 local epochs of 2 mini-batches (lr 0.1), attack by unrolling.

Command:
  python -m experiments.reconstruct --config=experiments/configs/lenet_fedavg.py \
      --workdir=workdirs/lenet_fedavg
  (Geng et al.'s treatment instead: --config.fedavg_method=approx)
The server sees only the weights after local training. `unroll` simulates the whole
local training on the dummy images (Dimitrov et al., TMLR 2022) and matches the weight
change; `approx` matches the update divided by local_lr x steps as one FedSGD gradient.
Labels: true labels by default, to isolate the image step as issue 5's probe did.
With --config.label_source=restored they come from the FedAvg label restoration
(average gradient, statistics along the trajectory); on this victim that fails: the DLG
LeNet at local_lr 0.1 fits the batch within the first local steps, so the average
gradient keeps little label signal (measured: label accuracy 0.25-0.36 for every method,
`experiments/restore_labels.py --config.setting=fedavg`, see README), and with one
wrong label the images do not come back (6.8 dB), as Geng et al. report.
Expected: unroll >= 20 dB and above approx on the same budget.
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
  c.label_source = "true"
  c.optimizer = "lbfgs"
  c.distance = "l2"
  c.tv = 0.1
  c.iterations = 1500
  c.log_every = 250
  c.patience = 3
  c.tol = 1e-3
  return c
