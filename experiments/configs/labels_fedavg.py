"""FedAvg label restoration against the client's local learning rate.

Command (the table in docs/labels.md):
  python -m experiments.restore_labels --config=experiments/configs/labels_fedavg.py \
      --workdir=workdirs/labels_fedavg
ConvNet width 16, untrained, 20 classes of photos; the client runs 5 local epochs of
full-batch SGD (5 local steps) at local_lr 1e-4, 1e-3, 1e-2 or 1e-1 on the small-batch
cells of `labels_small.py` (B=8 unique / one class 4 times / 4 classes x 2 / one class
for all; B=10 i.i.d.), 8 trials per cell. Every method reads the average gradient
-(theta_T - theta_0) / (lr x steps) with dummy statistics along the trajectory
(Dimitrov et al.'s interpolation; `select`, `fit` and `recentred` move their estimate
`labels.FEDAVG_SPEEDUP` times as far along it, `--config.speedup=1` for the plain mean).
`fit`, the default, also fits per-image logits to the average gradient at the
trajectory's midpoint and keeps a clear winner (`labels.restore_fedavg`).
Expected: exact where the local steps barely move the model (1e-4), failing as the
client fits its batch within the first steps (1e-2 and above).
"""

from experiments.configs import labels_small

_CELLS = ("batch_size=8,label_dist=unique", "batch_size=8,label_dist=single:4",
          "batch_size=8,label_dist=factor:2", "batch_size=8,label_dist=repeat",
          "batch_size=10,label_dist=random")


def get_config():
  c = labels_small.get_config()
  c.setting = "fedavg"
  c.local_epochs = 5
  c.local_batch_size = 0   # the whole batch: one local step per epoch
  c.methods = "geng,geng_bias,recentred,idlg,gradinversion,llg_plus,ilrg,cluster,select,fit"
  c.cells = ";".join(f"local_lr={lr},{cell}" for lr in ("0.0001", "0.001", "0.01", "0.1")
                     for cell in _CELLS)
  return c
