"""Geng et al.'s only published label table: batch 16, 0..8 duplicate labels.

Command:
  python -m experiments.restore_labels --config=experiments/configs/labels_duplicates.py \
      --workdir=workdirs/labels_duplicates
Expected: for every method, label accuracy against the number of duplicates d, where the
batch holds one class d + 1 times and 15 - d other classes once (label_dist single:d+1);
results.json holds the table, labels_vs_duplicates.png the plot. The paper reports Geng
97.4-99.6 % throughout and GradInversion falling from 99.6 % to 49.4 %.
"""

from experiments.configs import labels


def get_config():
  c = labels.get_config()
  c.batch_size = 16
  c.cells = ";".join(f"label_dist=single:{d + 1}" for d in range(9))
  c.trials = 10
  return c
