"""LeNet, a batch of 4 photos where two share a label (FedSGD), labels restored zero-shot.

Command:
  python -m experiments.reconstruct --config=experiments/configs/lenet_b4.py \
      --workdir=workdirs/lenet_b4
Expected (engine target): label counts exact and mean PSNR >= 25 dB (measured: seeds 0, 3,
7, 11 at 26.62, 25.06, 25.45, 27.30 dB, 33-49 s on a 2-core CPU). At B=4 the DLG
LeNet's gradient does not pin the images down (about 11k independent gradient entries
for 12k pixels): plain L-BFGS matches the gradient to 1e-8 of its norm at 13 dB; the
total-variation prior selects the natural solution. Vary --config.batch_size (1..8)
and --config.label_dist.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "lenet"
  c.batch_size = 4
  c.label_dist = "single:2"
  c.label_source = "restored"
  c.hypotheses = 1
  c.optimizer = "lbfgs"
  c.distance = "l2"
  c.tv = 0.1
  c.iterations = 8000
  c.restarts = 2
  c.log_every = 250
  c.patience = 3
  c.tol = 1e-3
  return c
