"""Geng et al.'s two findings on images: one wrong label breaks recovery, and images that
share a label come back fused.

Command:
  python -m experiments.sweep --config=experiments/configs/wrong_labels.py \
      --workdir=workdirs/wrong_labels
LeNet B=4 (two photos share a label, FedSGD, `lenet_b4.py`'s attack), run with the true
labels and with 1 or 2 of them changed to another class (`data.mislabel`), on 3 seeds
(other victims and batches). Expected: PSNR falls by many dB with one wrong label; the
`blend` of each row (results.json; `metrics.blend`: 0 = each reconstruction is its own
image, 0.5 = an even mix with the other image of a pair) is larger for the pair that
shares a label than for pairs that do not. sweep.png: PSNR against the number of wrong
labels, one line per seed.
"""

from experiments.configs import lenet_b4


def get_config():
  c = lenet_b4.get_config()
  c.label_source = "true"
  c.cells = ";".join(f"seed={seed},wrong_labels={wrong}"
                     for seed in (0, 1, 2) for wrong in (0, 1, 2))
  c.sweep_x = "wrong_labels"
  c.sweep_series = "seed"
  return c
