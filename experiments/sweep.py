r"""Run one reconstruction config over a list of cells and tabulate/plot the results.

  python -m experiments.sweep --config=experiments/configs/ablation_lenet_b4.py \
      --workdir=workdirs/ablation_lenet_b4

``config.cells`` is a ';'-separated list of overrides (``field=value,field=value``);
each cell runs `experiments.reconstruct.run` in ``workdir/cell_<i>`` (its own
results.json and figures). This writes ``workdir/results.json`` with one row per cell
(psnr, ssim, label accuracy, seconds) and ``sweep.png``: PSNR against
``config.sweep_x`` with one line per value of ``config.sweep_series``, or bars when
``sweep_x`` is empty.
"""

from __future__ import annotations

import os

from experiments import common, reconstruct
from jaxinvert import viz



def cell_name(cell: dict) -> str:
  return ", ".join(f"{k}={v}" for k, v in cell.items()) or "config"


def run(config, workdir: str) -> dict:
  cells = common.parse_cells(config)
  for cell in cells:  # every cell is checked before any work
    reconstruct.validate(common.apply_cell(config, cell))
  rows = []
  for i, cell in enumerate(cells):
    print(f"jaxinvert: cell {i + 1}/{len(cells)}: {cell_name(cell)}", flush=True)
    out = reconstruct.run(common.apply_cell(config, cell), os.path.join(workdir, f"cell_{i}"))
    rows.append({"cell": cell, **{k: out[k] for k in (
        "psnr", "ssim", "label_accuracy", "labels_exact", "seconds", "steps",
        "per_image_psnr", "blend")}})
  results = {"config": config, "rows": rows}
  files = [os.path.join(workdir, "sweep.png")]
  if config.sweep_x:
    series = {}
    for row in rows:
      name = f"{config.sweep_series}={row['cell'].get(config.sweep_series)}" \
          if config.sweep_series else "psnr"
      xs, ys = series.setdefault(name, ([], []))
      xs.append(row["cell"].get(config.sweep_x, config[config.sweep_x]))
      ys.append(row["psnr"])
    viz.curves(files[0], series, xlabel=config.sweep_x, ylabel="mean PSNR (dB)",
               markers=True, title=f"{config.model}, {config.setting}, B={config.batch_size}")
    results["series"] = {k: {"x": v[0], "psnr": v[1]} for k, v in series.items()}
  else:
    viz.bars(files[0], {"PSNR / 40 dB": [min(r["psnr"] / 40.0, 1.05) for r in rows],
                        "SSIM": [max(r["ssim"], 0.0) for r in rows]},
             [cell_name(r["cell"]) for r in rows],
             title=f"{config.model}, {config.setting}, B={config.batch_size}")
  files.insert(0, common.write_results(workdir, results))
  common.announce(workdir, files)
  fmt = lambda v: "-" if v is None else f"{v:.2f}"
  print(f"{'cell':52s} {'PSNR':>7s} {'SSIM':>6s} {'labels':>6s} {'s':>6s} "
        f"{'blend same / other label':>25s}")
  for r in rows:
    print(f"{cell_name(r['cell'])[:52]:52s} {r['psnr']:7.2f} {r['ssim']:6.3f} "
          f"{r['label_accuracy']:6.2f} {r['seconds']:6.0f} "
          f"{fmt(r['blend']['same_label']):>12s} / {fmt(r['blend']['different_label'])}",
          flush=True)
  return results



if __name__ == "__main__":
  common.script_main(run, default_config="ablation_lenet_b4.py",
                     description="A reconstruction config with cells (and sweep_x).")
