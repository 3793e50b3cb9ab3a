"""The held-in cells on which `select`'s median rule, its threshold and its estimators were chosen.

Command (docs/labels.md, "Median rule"):
  python -m experiments.restore_labels --config=experiments/configs/labels_select.py \
      --config.model=convnet --workdir=workdirs/labels_select_convnet
  (also --config.model=lenet --config.width=0, --config.model=resnet18, and
   --config.model=convnet --config.train_steps=100)
Cells: B=16 one class 8 times; B=32 as 8 classes x 4; B=48 as 8 classes x 6; B=20 one
class 6 times; B=24, 40, 64, 96 i.i.d. uniform; 16 trials each (other batches than
`labels_grid.py`'s 8). Methods: `select`'s three estimators (`recentred`, which replaced
`geng_bias` there, `ilrg`, `cluster`), `geng_bias`, and `select` itself, so that each cell
shows whether `select` reaches the best of them.
"""

from experiments.configs import labels


def get_config():
  c = labels.get_config()
  c.trials = 16
  c.methods = "geng_bias,recentred,ilrg,cluster,select"
  c.cells = ";".join([
      "batch_size=16,label_dist=single:8",
      "batch_size=32,label_dist=factor:4",
      "batch_size=64,label_dist=random",
      "batch_size=24,label_dist=random",
      "batch_size=40,label_dist=random",
      "batch_size=96,label_dist=random",
      "batch_size=48,label_dist=factor:6",
      "batch_size=20,label_dist=single:6",
  ])
  return c
