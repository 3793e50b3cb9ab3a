"""Throughput of one sharded attack against the number of devices and restarts per device.

  python -m experiments.bench_scaling --workdir=workdirs/bench_scaling

Issue 6's scaling figure. For every device count n (a mesh over the first n devices,
`parallel.make_mesh`) and every number r of restarts per device, the n x r copies of one
attack are stepped by `runner.Stepper` with `runner.Strategy.SHARDED`, compiled and
warmed up, then timed. Throughput is restart-iterations per second (copies x steps /
wall seconds); the scaling efficiency of n devices at r restarts per device is its
throughput over n times one device's at the same r (1.0 = linear; issue 6 asks >= 0.75).

Writes ``results.json`` (every row, ``efficiency_<n>dev`` at the largest r, backend and
device kind) and ``throughput_vs_restarts.png``; with more than one device count also
``throughput_vs_devices.png`` against the linear ideal.
"""

from __future__ import annotations

import os

import jax
import tqdm

from experiments import bench_restarts, common, reconstruct
from jaxinvert import parallel, runner, viz


def _counts(text: str, *, field: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    common.fail(field, f"expected comma-separated integers, got {text!r}")
  if not values or min(values) < 1:
    common.fail(field, f"expected positive integers, got {text!r}")
  return values


def device_counts(config) -> list[int]:
  """``config.devices``, or 1, 2, 4, ... up to every device; checked against what exists."""
  available = jax.device_count()
  if not config.devices:
    counts, n = [], 1
    while n < available:
      counts.append(n)
      n *= 2
    return counts + [available]
  counts = _counts(config.devices, field="devices")
  if max(counts) > available:
    common.fail("devices", f"asks for {max(counts)} devices, {available} available")
  return counts


def validate(config) -> None:
  reconstruct.validate(config)
  _counts(config.restarts_per_device, field="restarts_per_device")
  if config.steps_per_call < 1:
    common.fail("steps_per_call", f"must be >= 1, got {config.steps_per_call}")
  if config.iterations % config.steps_per_call:
    common.fail("iterations", f"{config.iterations} is not a multiple of steps_per_call "
                f"({config.steps_per_call})")


def measure(config, on_row=lambda rows: None) -> list[dict]:
  """One row per (devices, restarts per device): seconds per step and throughput;
  ``on_row(rows so far)`` after each."""
  counts = device_counts(config)
  per_device = _counts(config.restarts_per_device, field="restarts_per_device")
  attack, hyps = bench_restarts.build_case(config)
  rows = []
  bar = tqdm.tqdm(total=len(counts) * len(per_device), desc="devices x restarts",
                  disable=not config.progress)
  for n in counts:
    mesh = parallel.make_mesh(jax.devices()[:n])
    for r in per_device:
      cfg = config.copy_and_resolve_references()
      cfg.restarts = n * r
      seconds = bench_restarts.seconds_per_step(attack, hyps, cfg, runner.Strategy.SHARDED,
                                                config.steps_per_call, mesh)
      rows.append({"devices": n, "restarts_per_device": r, "copies": n * r,
                   "seconds_per_step": seconds, "restart_its_per_s": n * r / seconds})
      bar.update(1)
      print(f"  {n:3d} devices x {r:3d} restarts: {seconds * 1e3:8.2f} ms/step, "
            f"{n * r / seconds:9.1f} restart-its/s", flush=True)
      on_row(rows)
  bar.close()
  return rows


def efficiency(rows: list[dict]) -> dict[int, dict[int, float]]:
  """devices -> restarts per device -> throughput / (devices x one device's)."""
  one = {r["restarts_per_device"]: r["restart_its_per_s"] for r in rows if r["devices"] == 1}
  out: dict[int, dict[int, float]] = {}
  for r in rows:
    base = one.get(r["restarts_per_device"])
    if base:
      out.setdefault(r["devices"], {})[r["restarts_per_device"]] = (
          r["restart_its_per_s"] / (r["devices"] * base))
  return out


def run(config, workdir: str) -> dict:
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  # Rewritten after every row (complete: false), so a run cut short keeps its rows.
  rows = measure(config, on_row=lambda rows: common.write_results(
      workdir, {"rows": rows, "complete": False, "config": config}))
  eff = efficiency(rows)
  counts = sorted({r["devices"] for r in rows})
  per_device = sorted({r["restarts_per_device"] for r in rows})
  results = {
      "rows": rows, "efficiency": eff,
      **{f"efficiency_{n}dev": eff[n][per_device[-1]] for n in counts if n in eff},
      "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(), "complete": True, "config": config,
  }
  files = [common.write_results(workdir, results)]
  files.append(os.path.join(workdir, "throughput_vs_restarts.png"))
  viz.curves(files[-1], {
      f"{n} device{'s' * (n > 1)}": (
          [r["restarts_per_device"] for r in rows if r["devices"] == n],
          [r["restart_its_per_s"] for r in rows if r["devices"] == n]) for n in counts},
      xlabel="restarts per device", ylabel="restart-iterations / s", markers=True,
      title=f"sharded attack, {jax.devices()[0].device_kind}")
  if len(counts) > 1:
    files.append(os.path.join(workdir, "throughput_vs_devices.png"))
    series = {}
    for r in per_device:
      pts = [(x["devices"], x["restart_its_per_s"]) for x in rows
             if x["restarts_per_device"] == r]
      series[f"{r} restarts/device"] = ([p[0] for p in pts], [p[1] for p in pts])
      if r == per_device[-1] and pts[0][0] == 1:
        series[f"linear ideal ({r}/device)"] = ([p[0] for p in pts],
                                                [p[0] * pts[0][1] for p in pts])
    viz.curves(files[-1], series, xlabel="devices", ylabel="restart-iterations / s",
               markers=True, title="sharded attack: throughput against devices")
  common.announce(workdir, files)
  return results


if __name__ == "__main__":
  common.script_main(run, default_config="bench_scaling.py",
                     description="Scaling benchmark config.")
