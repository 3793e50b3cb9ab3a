"""FedAvg label restoration on small heads: 3, 5 and 10 classes, against the local lr.

`labels_fedavg.py` measures FedAvg updates on a 20-output head; `labels_heads.py` measures
FedSGD gradients on heads of 2 to 10 classes. This config crosses the two: the rules that
combine the closed forms on small heads (docs/labels.md, "Small heads" and "Heads of 3 and
4 classes") read an average gradient here, not one gradient.

Command (the table in docs/labels.md):
  python -m experiments.restore_labels --config=experiments/configs/labels_fedavg_heads.py \
      --workdir=workdirs/labels_fedavg_heads
ConvNet width 16, untrained (also --config.train_steps=100; --config.model=lenet
--config.width=0); the victim has the cell's N outputs. The
client runs 5 local epochs of full-batch SGD (5 local steps) at local_lr 1e-4, 1e-3 or
1e-2. Cells (B = batch size), each at every lr:
- N=3: B=4 and 8 i.i.d.; one class 6 times and two singles; 3 classes x 3.
- N=5: B=4 and 8 i.i.d.; one class 5 times and three singles; 5 classes x 2.
- N=10: B=8 and 16 i.i.d.; one class 12 times and four singles; 4 classes x 2.
8 trials per cell, every method.
"""

from experiments.configs import labels_fedavg

_HEADS = ((3, ("4,random", "8,random", "8,single:6", "9,factor:3")),
          (5, ("4,random", "8,random", "8,single:5", "10,factor:2")),
          (10, ("8,random", "16,random", "16,single:12", "8,factor:2")))


def get_config():
  c = labels_fedavg.get_config()
  cells = []
  for lr in ("0.0001", "0.001", "0.01"):
    for num_classes, specs in _HEADS:
      for spec in specs:
        batch, dist = spec.split(",")
        cells.append(f"local_lr={lr},num_classes={num_classes},batch_size={batch},"
                     f"label_dist={dist}")
  c.cells = ";".join(cells)
  return c
