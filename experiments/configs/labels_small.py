"""Label restoration on small batches (2 K <= N), where `fit` certifies count vectors.

Command (the table in docs/labels.md):
  python -m experiments.restore_labels --config=experiments/configs/labels_small.py \
      --config.model=convnet --config.train_steps=100 --workdir=workdirs/labels_small
  (also untrained: --config.train_steps=0; --config.model=lenet --config.width=0;
   --config.model=resnet18 with --config.train_steps=0, 100 or 1000;
   --config.train_steps=1000)
Cells, 20 classes of photos: B=8 with unique labels, one class 4 times, 4 classes x 2,
one class for all; B=10 i.i.d. uniform. 8 trials per cell.
"""

from experiments.configs import labels


def get_config():
  c = labels.get_config()
  c.trials = 8
  c.methods = "geng,geng_bias,recentred,idlg,gradinversion,llg_plus,ilrg,cluster,select,fit"
  c.cells = ";".join([
      "batch_size=8,label_dist=unique",
      "batch_size=8,label_dist=single:4",
      "batch_size=8,label_dist=factor:2",
      "batch_size=8,label_dist=repeat",
      "batch_size=10,label_dist=random",
  ])
  return c
