"""Label restoration over batch sizes and label distributions, one victim per run.

Command (the README table; all rows in docs/labels.md):
  python -m experiments.restore_labels --config=experiments/configs/labels_grid.py \
      --config.model=convnet --workdir=workdirs/labels_grid_convnet
  (also --config.model=lenet --config.width=0, --config.model=resnet18, and
   --config.train_steps=100 for a trained victim)
Cells: B=1, 8 unique; 16 with one class 8 times; 32 as 8 classes x 4; 64 i.i.d.
uniform; 128 from one class. Per cell and method: exact count-vector rate and label
accuracy over `trials` batches.
"""

from experiments.configs import labels


def get_config():
  c = labels.get_config()
  c.trials = 8
  c.cells = ";".join([
      "batch_size=1,label_dist=unique",
      "batch_size=8,label_dist=unique",
      "batch_size=16,label_dist=single:8",
      "batch_size=32,label_dist=factor:4",
      "batch_size=64,label_dist=random",
      "batch_size=128,label_dist=repeat",
  ])
  return c
