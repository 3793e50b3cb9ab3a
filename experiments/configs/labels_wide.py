"""Label restoration on a wide head: 1000 outputs (ImageNet's N) over photos' 20 classes.

Command (the table in docs/labels.md):
  python -m experiments.restore_labels --config=experiments/configs/labels_wide.py \
      --workdir=workdirs/labels_wide
  (CIFAR-100's N: --config.head_classes=100 with larger batches, e.g.
   --config.cells='batch_size=16,label_dist=single:8;batch_size=16,label_dist=random')
The victim's classifier has `head_classes` outputs, and the client's batches hold images of
photos' 20 classes, so every other output's class is absent: what the server faces on an
ImageNet model when a client holds a few classes. No wide dataset is at hand offline
(TFDS needs a data_dir), so this stands in for one; the estimators see only the update.
With 2 K <= N, `fit` fits each candidate in the feature subspace alone (K^2 unknowns)
where K N exceeds `labels.FIT_MAX_UNKNOWNS`.
"""

from experiments.configs import labels


def get_config():
  c = labels.get_config()
  c.head_classes = 1000
  c.trials = 8
  c.cells = ";".join([
      "batch_size=8,label_dist=single:4",
      "batch_size=8,label_dist=factor:2",
      "batch_size=8,label_dist=random",
  ])
  return c
