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

Several hosts: run the same command on every host with ``--config.distributed=True`` (and
the coordinator flags where JAX does not detect them, as for `experiments.reconstruct`).
Every process runs every program, so an n-device mesh takes n / P devices from each of
the P processes (`mesh_devices`), counts are multiples of P, efficiencies are against
the P-device mesh, and process 0 alone writes.
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


def _by_process(devices) -> dict[int, list]:
  out: dict[int, list] = {}
  for d in devices:
    out.setdefault(d.process_index, []).append(d)
  return out


def device_counts(config, devices=None) -> list[int]:
  """``config.devices``, or P, 2P, 4P, ... up to every device (P processes, 1 on one
  host); checked against what exists."""
  devices = jax.devices() if devices is None else devices
  available, processes = len(devices), len(_by_process(devices))
  if not config.devices:
    counts, n = [], processes
    while n < available:
      counts.append(n)
      n *= 2
    return counts + [available]
  counts = _counts(config.devices, field="devices")
  if max(counts) > available:
    common.fail("devices", f"asks for {max(counts)} devices, {available} available")
  for n in counts:
    mesh_devices(n, devices)  # every count must split over the processes
  return counts


def mesh_devices(n: int, devices=None) -> list:
  """The devices of an n-device mesh: the first n / P local devices of each of the P
  processes. Every process of a multi-host run executes every program, so each must
  hold a share of every mesh; on one host these are simply the first n devices."""
  by_process = _by_process(jax.devices() if devices is None else devices)
  if n % len(by_process):
    common.fail("devices", f"{n} devices do not split over the {len(by_process)} processes; "
                f"give multiples of {len(by_process)}")
  share = n // len(by_process)
  if any(len(local) < share for local in by_process.values()):
    common.fail("devices", f"{n} devices need {share} on each process, and one has fewer")
  return [d for p in sorted(by_process) for d in by_process[p][:share]]


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
    mesh = parallel.make_mesh(mesh_devices(n))
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
  """devices -> restarts per device -> throughput / (devices / n0 x n0 devices'), n0 the
  smallest device count measured (1 on one host; the process count on several, where
  every mesh holds a share of each process)."""
  smallest = min(r["devices"] for r in rows)
  base = {r["restarts_per_device"]: r["restart_its_per_s"] for r in rows
          if r["devices"] == smallest}
  out: dict[int, dict[int, float]] = {}
  for r in rows:
    if base.get(r["restarts_per_device"]):
      ideal = r["devices"] / smallest * base[r["restarts_per_device"]]
      out.setdefault(r["devices"], {})[r["restarts_per_device"]] = r["restart_its_per_s"] / ideal
  return out


def run(config, workdir: str) -> dict:
  validate(config)
  primary = common.start_processes(config)  # every host runs this; process 0 writes
  os.makedirs(workdir, exist_ok=True)

  def save_partial(rows: list[dict]) -> None:  # a run cut short keeps its rows
    if primary:
      common.write_results(workdir, {"rows": rows, "complete": False, "config": config})

  rows = measure(config, on_row=save_partial)
  eff = efficiency(rows)
  counts = sorted({r["devices"] for r in rows})
  per_device = sorted({r["restarts_per_device"] for r in rows})
  results = {
      "rows": rows, "efficiency": eff,
      **{f"efficiency_{n}dev": eff[n][per_device[-1]] for n in counts if n in eff},
      "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(), "complete": True, "config": config,
  }
  if not primary:
    common.announce_secondary(workdir)
    return results
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
      if r == per_device[-1]:
        series[f"linear ideal ({r}/device)"] = ([p[0] for p in pts],
                                                [p[0] / pts[0][0] * pts[0][1] for p in pts])
    viz.curves(files[-1], series, xlabel="devices", ylabel="restart-iterations / s",
               markers=True, title="sharded attack: throughput against devices")
  common.announce(workdir, files)
  return results


if __name__ == "__main__":
  common.script_main(run, default_config="bench_scaling.py",
                     description="Scaling benchmark config.")
