"""Ablation: which ingredient takes LeNet B=4 (two images share a label) from 13 dB up.

Command:
  python -m experiments.sweep --config=experiments/configs/ablation_lenet_b4.py \
      --workdir=workdirs/ablation_lenet_b4
True labels (to isolate the image prior). Cells: plain L-BFGS (DLG), + TV, + TV and 4
restarts, + TV and the [0, 1] box, cosine + TV, signed Adam + TV + box (Geiping et al.).
Expected: TV carries most of the way; results.json has PSNR/SSIM per cell, sweep.png
compares them.
"""

from experiments.configs import lenet_b4


def get_config():
  c = lenet_b4.get_config()
  c.label_source = "true"
  c.restarts = 1
  c.iterations = 3000          # the budget the README table was measured with
  c.cells = ";".join([
      "tv=0.0",
      "tv=0.1",
      "tv=0.1,restarts=4",
      "tv=0.1,box=clip",
      "tv=0.1,distance=cosine",
      "tv=0.1,box=clip,optimizer=signed_adam,lr=0.05",
  ])
  return c
