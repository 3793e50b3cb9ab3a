"""FedAvg sweep: PSNR against local epochs (1, 2, 5, 10), unrolled attack vs approximation.

Command:
  python -m experiments.sweep --config=experiments/configs/fedavg_epochs.py \
      --workdir=workdirs/fedavg_epochs
Same 4 photos, LeNet, mini-batches of 2, lr 0.1, true labels (to isolate the image
step), the same iteration budget for every cell. Expected: the gap between unroll and
approx grows with the number of local steps, the reason the unroll exists.
results.json holds the table (series unroll / approx), sweep.png the figure.
"""

from experiments.configs import lenet_fedavg


def get_config():
  c = lenet_fedavg.get_config()
  c.label_source = "true"
  c.iterations = 1000
  c.cells = ";".join(f"fedavg_method={m},local_epochs={e}"
                     for m in ("unroll", "approx") for e in (1, 2, 5, 10))
  c.sweep_x = "local_epochs"
  c.sweep_series = "fedavg_method"
  return c
