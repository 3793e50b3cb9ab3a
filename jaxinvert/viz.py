"""Figures: image grids and curves (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np


def image_rows(path: str, rows: Mapping[str, np.ndarray], *,
               captions: Mapping[str, Sequence[str]] | None = None, title: str | None = None,
               max_columns: int = 16) -> None:
  """Saves a grid: one row per named image batch (e.g. originals over reconstructions).

  Args:
    path: PNG path.
    rows: row name -> ``[N, H, W, C]`` images in [0, 1] (rows may differ in N).
    captions: row name -> one caption per image (e.g. PSNR).
    title: figure title.
    max_columns: images shown per row.
  """
  names = list(rows)
  if all(len(v) == 1 for v in rows.values()):  # single images: side by side
    fig, axes = plt.subplots(1, len(names), squeeze=False, figsize=(2.6 * len(names), 3.0))
    for c, name in enumerate(names):
      ax = axes[0, c]
      ax.imshow(np.clip(np.asarray(rows[name][0]), 0, 1), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      caption = f" ({captions[name][0]})" if captions and name in captions else ""
      ax.set_title(name + caption, fontsize=8)
    if title:
      fig.suptitle(title, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return
  columns = min(max(len(v) for v in rows.values()), max_columns)
  fig, axes = plt.subplots(len(names), columns, squeeze=False,
                           figsize=(1.3 * columns + 1.2, 1.45 * len(names) + 0.4))
  for r, name in enumerate(names):
    for c in range(columns):
      ax = axes[r, c]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if c < len(rows[name]):
        ax.imshow(np.clip(np.asarray(rows[name][c]), 0, 1), interpolation="nearest")
        if captions and name in captions and c < len(captions[name]):
          ax.set_title(captions[name][c], fontsize=7)
      if c == 0:
        ax.set_ylabel(name, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def curves(path: str, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
           xlabel: str, ylabel: str, title: str | None = None, logy: bool = False,
           markers: bool = False) -> None:
  """Saves line plots: series name -> (x values, y values)."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, (x, y) in series.items():
    ax.plot(x, y, marker="o" if markers else None, label=name, linewidth=1.3)
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title, fontsize=10)
  if len(series) > 1:
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def bars(path: str, groups: Mapping[str, Sequence[float]], names: Sequence[str], *,
         title: str | None = None, ylabel: str = "") -> None:
  """Saves grouped bars: group name -> one value per name."""
  fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 3.6))
  width = 0.8 / max(1, len(groups))
  for i, (group, values) in enumerate(groups.items()):
    ax.bar(np.arange(len(names)) + i * width, values, width, label=group)
  ax.set_xticks(np.arange(len(names)) + width * (len(groups) - 1) / 2)
  ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
