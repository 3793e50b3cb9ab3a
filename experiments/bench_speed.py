"""Attack-step throughput per case, against this machine's matmul limit, in one run.

  python -m experiments.bench_speed --workdir=workdirs/bench_speed

For every case of `experiments/configs/bench_speed.py` it builds the attack exactly
as `experiments.reconstruct` does, compiles one restart's step, and reports:
``jaxinvert_its_per_s`` (steady-state restart-iterations per second),
``flops_per_step`` (XLA's compiled cost analysis on the CPU; elsewhere, where that
analysis leaves out cuDNN/cuBLAS calls, the count of `experiments.flop_count` on the
step's jaxpr; both are kept), ``matmul_flops_per_s`` (a large f32
matmul timed in the same run, again right after each round of each case) and
``roofline_fraction_<case>`` = FLOPs per step x its/s over the matmul FLOP/s of the same
round, the median over rounds (per round in ``cases.<case>.roofline_fraction_rounds``).
``results.json`` is rewritten after every case with
``complete: false`` (a run cut short keeps its finished cases) and ends ``complete: true``.

With ``--config.reference_python=PATH`` (a Python with PyTorch and breaching 0.1.2, see
``requirements-bench.txt``) it also times, in the same run on the same images, breaching's
attack step (`experiments/breaching_reference.py`) and a plain-PyTorch version of the
same step (`experiments/torch_reference.py`), and reports ``reference_its_per_s_<case>``
and ``ratio_its_<case>`` (jaxinvert over reference) against breaching where it ran the
case, against plain PyTorch otherwise (``reference_<case>`` says which), plus
``breaching_its_per_s_<case>`` and ``torch_its_per_s_<case>``, and
``torch_flops_per_step_<case>``: the plain-PyTorch step's FLOPs by torch's own operator
formulas, beside XLA's count of jaxinvert's step. Without that flag the
reference keys are null and no ratio is claimed. With ``--config.rounds=R`` each case is
timed R times in alternation (jaxinvert, then the references), and the ratio reported is
the median of the R per-round ratios (``ratio_its_rounds_<case>``; every round in
``rounds``), which a machine whose speed drifts over minutes distorts less than one pair.

For the cases in ``--config.quality_cases`` it also measures time to quality: breaching's
default attack runs for ``reference_iterations`` on the case's images, then jaxinvert's
``quality_attack`` runs until its chosen restart reaches breaching's PSNR;
``ratio_time_to_psnr_<case>`` is breaching's seconds over jaxinvert's (null when jaxinvert
did not get there within ``quality_max_factor`` times breaching's time), with
``breaching_psnr_<case>``, ``jaxinvert_psnr_<case>`` and ``time_to_psnr_<case>.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from experiments import common, flop_count, reconstruct
from jaxinvert import metrics, runner, viz



@jax.jit
def _square(x: jax.Array) -> jax.Array:
  return x @ x


def matmul_flops_per_s(size: int, repeats: int = 5) -> float:
  """f32 ``size x size`` matmul throughput of this backend (best of ``repeats``).

  Called once per round of every case: one jitted program at module level, so that only
  the first call for a size traces and compiles.
  """
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  _square(a).block_until_ready()
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    _square(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def parse_cases(text: str) -> list[tuple[str, dict]]:
  cases = []
  for item in filter(None, text.split(";")):
    name, _, overrides = item.partition(":")
    cases.append((name, overrides))
  return cases


def _case_keys(config) -> tuple[jax.Array, ...]:
  """(model, data, client, attack) keys of a case."""
  return tuple(jax.random.split(jax.random.key(config.seed), 4))


def _case_attack(config, images, labels):
  """The case's victim, the client's update on ``images`` and the attack on it, built as
  `experiments.reconstruct` does; returns ``(attack, attack_key)``."""
  model_key, _, client_key, attack_key = _case_keys(config)
  model, variables = common.build_victim(config, model_key)
  out = common.shared_update(config, model, variables, images, labels, client_key)
  update, order = out if config.setting == "fedavg" else (out, None)
  attack = reconstruct.build_attack(config, model, variables, update, order, config.batch_size)
  return attack, attack_key


def measure_case(config) -> tuple[dict, np.ndarray, np.ndarray, Callable[[], float]]:
  """One case's jaxinvert row, the client images and labels it attacked, and a timer.

  The timer runs ``config.timed_steps`` more steps of the same compiled program and
  returns their seconds per step (`run` calls it once per extra round).
  """
  reconstruct.validate(config)
  images, labels = common.client_batch(config, _case_keys(config)[1])
  attack, attack_key = _case_attack(config, images, labels)
  state = jax.jit(attack.init)(attack_key, jnp.asarray(labels))
  # The runner's program: the shared update an argument, not a constant (`Attack.target`).
  target, jitted = attack.target, jax.jit(attack.step)
  step = lambda s: jitted(s, target)
  compiled = jitted.lower(state, target).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", float("nan")))
  counted, _ = flop_count.jaxpr_flops(attack.step, state)
  # XLA's count leaves out the library calls (cuDNN, cuBLAS) its GPU backend makes for
  # convolutions and matmuls, so off the CPU the roofline takes the jaxpr's count.
  source = "xla_cost_analysis" if jax.default_backend() == "cpu" else "jaxpr"
  flops = xla_flops if source == "xla_cost_analysis" else counted
  for _ in range(config.warmup):
    state, _ = step(state)
  jax.block_until_ready(state)
  current = [state]

  def timer() -> float:
    state = current[0]
    start = time.perf_counter()
    for _ in range(config.timed_steps):
      state, _ = step(state)
    jax.block_until_ready(state)
    seconds = (time.perf_counter() - start) / config.timed_steps
    if bool(state.failed):  # a step whose value or gradient is not finite times nothing useful
      raise FloatingPointError(
          f"case {config.batch_size=} {config.model=} {config.setting=}: the attack's "
          f"objective or gradient became non-finite during the timed steps "
          f"(objective {state.objective})")
    current[0] = state
    return seconds

  seconds = timer()
  row = {"seconds_per_step": seconds, "its_per_s": 1.0 / seconds, "flops_per_step": flops,
         "xla_flops_per_step": xla_flops, "jaxpr_flops_per_step": counted,
         "flops_source": source}
  if config.psnr_iterations:
    result = runner.run(attack, key=attack_key, hypotheses=np.asarray(labels)[None],
                        iterations=config.psnr_iterations, progress=False,
                        log_every=config.psnr_iterations)
    row["psnr"] = metrics.reconstruction_report(result.images, images, labels, labels)["psnr"]
    row["psnr_iterations"] = config.psnr_iterations
  return row, np.asarray(images), np.asarray(labels), timer


def _run_reference(python: str, script: str, case: str, out: str,
                   *extra: str) -> tuple[dict | None, str]:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), script)
  proc = subprocess.run([python, path, "--case", case, "--out", out, *extra],
                        capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    return None, proc.stderr[-2000:]
  with open(out) as f:
    return json.load(f), ""


def measure_reference(config, workdir: str, name: str, images: np.ndarray,
                      labels: np.ndarray) -> dict:
  """Times this case in PyTorch, in the environment of ``config.reference_python``.

  breaching 0.1.2 (`experiments/breaching_reference.py`) where it can run the case, and
  always the plain-PyTorch step (`experiments/torch_reference.py`). Returns
  ``{"breaching": row or None, "breaching_error": str, "torch": row, "used": name}``
  where ``used`` is the one the ratio is taken against: breaching when it ran.
  """
  folder = os.path.join(workdir, "reference")
  case = _save_case(config, folder, name, images, labels)
  out = {"breaching": None, "breaching_error": "not tried (config.reference=torch)"}
  if config.reference == "breaching":
    out["breaching"], out["breaching_error"] = _run_reference(
        config.reference_python, "breaching_reference.py", case,
        os.path.join(folder, f"{name}_breaching.json"))
  out["torch"], error = _run_reference(config.reference_python, "torch_reference.py", case,
                                       os.path.join(folder, f"{name}_torch.json"))
  if out["torch"] is None:
    raise RuntimeError(f"torch reference failed for case {name} ({config.reference_python}):"
                       f"\n{error}")
  out["used"] = "breaching" if out["breaching"] is not None else "torch"
  return out


def _save_case(config, folder: str, name: str, images: np.ndarray, labels: np.ndarray) -> str:
  os.makedirs(folder, exist_ok=True)
  case = os.path.join(folder, f"{name}.npz")
  np.savez(case, images=np.asarray(images, np.float32), labels=np.asarray(labels),
           model=config.model, width=config.width, num_classes=common.num_classes(config),
           setting=config.setting, local_epochs=config.local_epochs,
           local_batch_size=common.local_batch_size(config), local_lr=config.local_lr,
           tv=config.tv, lr=config.lr, warmup=config.warmup, timed_steps=config.timed_steps)
  return case


def time_to_psnr(config, images: np.ndarray, labels: np.ndarray, *, target: float,
                 max_seconds: float) -> dict:
  """Wall seconds until jaxinvert's attack (``config``) reaches ``target`` dB on ``images``.

  The clock runs from the attack's initialisation (compilation included) and stops
  only while the PSNR of the chosen copy is measured every ``config.log_every`` steps.
  The copy is chosen as a user would, without the ground truth: lowest matching
  objective at the last step taken, which the step already computes (no extra program
  to compile or run). Gives up after ``max_seconds`` of attack time.
  """
  if max_seconds <= 0:
    raise ValueError(f"max_seconds must be positive, got {max_seconds}")
  reconstruct.validate(config)
  attack, attack_key = _case_attack(config, images, labels)
  restarts = config.restarts
  strategy = runner.Strategy(config.strategy) if config.strategy else runner.default_strategy()
  images_fn = jax.jit(jax.vmap(attack.images))
  start = time.perf_counter()
  states = runner.init_states(attack, attack_key, jnp.asarray(labels)[None], restarts)
  stepper = runner.Stepper(attack, strategy, restarts, restarts, 1, None)
  work = stepper.prepare(states)
  elapsed, step, curve, reached = 0.0, 0, [], None
  bar = tqdm.tqdm(desc=f"time to {target:.2f} dB", unit="step", leave=False,
                  disable=not config.progress)
  while elapsed < max_seconds:
    work, objective = stepper.advance(work, config.log_every)
    states = stepper.collect(work)
    losses = np.asarray(objective[-1], np.float64)
    chosen = int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))
    chosen_images = images_fn(states)[chosen]
    jax.block_until_ready(chosen_images)
    elapsed += time.perf_counter() - start
    step += config.log_every
    bar.update(config.log_every)
    psnr = metrics.reconstruction_report(chosen_images, images, labels, labels)["psnr"]
    curve.append({"step": step, "seconds": elapsed, "psnr": psnr})
    bar.set_postfix(psnr=f"{psnr:.2f}", seconds=f"{elapsed:.0f}")
    if psnr >= target:
      reached = elapsed
      break
    start = time.perf_counter()
  bar.close()
  return {"seconds_to_target": reached, "target_psnr": target, "final_psnr": curve[-1]["psnr"],
          "curve": curve}


def reference_curve(path: str, images: np.ndarray, labels: np.ndarray, *,
                    final_psnr: float) -> tuple[list[dict], int | None]:
  """breaching's PSNR along its run, from the snapshots `breaching_reference.py` saved.

  Shows how soon breaching itself had its final PSNR (it has no early stop, so its time
  is always the whole run's).

  Args:
    path: the ``*_trajectory.npz`` (``steps``, ``seconds``, ``images``); may be absent.
    images, labels: the client's batch.
    final_psnr: PSNR of breaching's answer.

  Returns:
    ``([{"step", "seconds", "psnr"}, ...], first recorded step with PSNR >= final_psnr or
    None)``; ``([], None)`` without a trajectory.
  """
  if not os.path.exists(path):
    return [], None
  curve = []
  with np.load(path) as traj:
    for step, seconds, snapshot in zip(traj["steps"], traj["seconds"], traj["images"]):
      psnr = metrics.reconstruction_report(snapshot, images, labels, labels)["psnr"]
      curve.append({"step": int(step), "seconds": float(seconds), "psnr": psnr})
  return curve, next((c["step"] for c in curve if c["psnr"] >= final_psnr), None)


def quality_case(config, workdir: str, name: str, images: np.ndarray, labels: np.ndarray,
                 results: dict) -> None:
  """breaching's default attack on the case's images, then jaxinvert's time to its PSNR."""
  folder = os.path.join(workdir, "reference")
  case = _save_case(config, folder, name, images, labels)
  ref, error = _run_reference(config.reference_python, "breaching_reference.py", case,
                              os.path.join(folder, f"{name}_breaching_quality.json"),
                              "--quality-iterations", str(config.reference_iterations),
                              "--record-every", str(config.log_every))
  if ref is None:
    raise RuntimeError(f"breaching's default attack failed on case {name}:\n{error}")
  recon = np.load(os.path.join(folder, f"{name}_breaching_quality_images.npy"))
  ref["psnr"] = metrics.reconstruction_report(recon, images, labels, labels)["psnr"]
  ref["curve"], ref["first_step_at_final_psnr"] = reference_curve(
      os.path.join(folder, f"{name}_breaching_quality_trajectory.npz"), images, labels,
      final_psnr=ref["psnr"])
  print(f"  {name:22s} breaching default attack, {ref['iterations']} its: "
        f"{ref['psnr']:.2f} dB in {ref['seconds']:.1f} s (first at or above it: step "
        f"{ref['first_step_at_final_psnr']})", flush=True)
  spec = with_overrides(config, f"iterations={config.reference_iterations},"
                        f"{config.quality_attack}")
  ours = time_to_psnr(spec, images, labels, target=ref["psnr"],
                      max_seconds=config.quality_max_factor * ref["seconds"])
  ours["attack"] = config.quality_attack
  reached = ours["seconds_to_target"]
  ratio = None if reached is None else ref["seconds"] / reached
  print(f"  {name:22s} jaxinvert ({config.quality_attack}): "
        + (f"{ref['psnr']:.2f} dB in {reached:.1f} s, {ratio:.2f}x sooner" if reached else
           f"did not reach {ref['psnr']:.2f} dB in {ours['curve'][-1]['seconds']:.0f} s "
           f"(best {max(c['psnr'] for c in ours['curve']):.2f} dB)"), flush=True)
  results["cases"][name]["quality"] = {"breaching": ref, "jaxinvert": ours}
  results[f"breaching_psnr_{name}"] = ref["psnr"]
  results[f"jaxinvert_psnr_{name}"] = ours["final_psnr"]
  results[f"ratio_time_to_psnr_{name}"] = ratio
  path = os.path.join(workdir, f"time_to_psnr_{name}.png")
  viz.curves(path, {"jaxinvert": ([c["seconds"] for c in ours["curve"]],
                                  [c["psnr"] for c in ours["curve"]]),
                    f"breaching default ({ref['iterations']} its)": (
                        [c["seconds"] for c in ref["curve"]] + [ref["seconds"]],
                        [c["psnr"] for c in ref["curve"]] + [ref["psnr"]])},
             xlabel="wall seconds", ylabel="PSNR (dB)", markers=True,
             title=f"{name}: time to breaching's PSNR")
  results.setdefault("figures", []).append(path)


def with_overrides(config, overrides: str):
  """``config`` with ``'field=value,...'`` applied (typed like the config)."""
  spec = config.copy_and_resolve_references()
  with spec.unlocked():
    spec.cells = overrides
  return common.apply_cell(config, common.parse_cells(spec)[0])


def _print_jaxinvert(name: str, row: dict, fraction: float) -> None:
  flops_per_s = row["flops_per_step"] * row["its_per_s"]
  print(f"  {name:22s} {row['seconds_per_step'] * 1e3:9.1f} ms/step "
        f"{row['flops_per_step'] / 1e9:7.2f} GFLOP/step  {flops_per_s / 1e9:6.1f} GFLOP/s  "
        f"roofline {fraction:.2f}", flush=True)


def _print_reference(name: str, row: dict, ref: dict, config) -> None:
  for label in ("breaching", "torch"):
    if ref[label] is not None:
      flops = ref[label].get("flops_per_step")
      counted = f"  {flops / 1e9:7.2f} GFLOP/step (torch's count)" if flops else ""
      print(f"  {name:22s} {label:9s} {ref[label]['seconds_per_step'] * 1e3:9.1f} ms/step  "
            f"jaxinvert/{label} {row['its_per_s'] / ref[label]['its_per_s']:.2f}x{counted}",
            flush=True)
  if ref["breaching"] is None and config.reference == "breaching":
    print(f"  {name:22s} breaching could not run this case; plain PyTorch stands in",
          flush=True)


def run(config, workdir: str) -> dict:
  if config.reference not in ("breaching", "torch"):
    raise ValueError(f"config.reference: {config.reference!r} is not 'breaching' or 'torch'")
  quality = [q for q in config.quality_cases.split(",") if q]
  unknown = set(quality) - {name for name, _ in parse_cases(config.cases)}
  if unknown:
    common.fail("quality_cases", f"{sorted(unknown)} are not among config.cases")
  if quality and (config.reference_iterations <= 0 or config.quality_max_factor <= 0):
    common.fail("reference_iterations", "reference_iterations and quality_max_factor must be "
                f"positive, got {config.reference_iterations} and {config.quality_max_factor}")
  if config.rounds < 1:
    common.fail("rounds", f"must be >= 1, got {config.rounds}")
  os.makedirs(workdir, exist_ok=True)
  peak = matmul_flops_per_s(config.matmul_size)
  print(f"  matmul {config.matmul_size}^3 f32: {peak / 1e9:.1f} GFLOP/s", flush=True)
  # The run's first matmul measurement; the fractions take each round's own (see below).
  results = {"matmul_flops_per_s": peak, "backend": jax.default_backend(),
             "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
             # None = the backend's default: TF32 for f32 matmuls and convolutions on
             # NVIDIA GPUs since Ampere (PyTorch's default for convolutions too), f32 on CPU.
             "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
             "reference": (f"{config.reference} (per case: reference_<case> says which ran)"
                           if config.reference_python else
                           "not measured: no --config.reference_python given"),
             "cases": {}, "config": config}
  rounds = results["rounds"] = []
  for name, overrides in tqdm.tqdm(parse_cases(config.cases), desc="cases",
                                    disable=not config.progress):
    cfg = with_overrides(config, overrides)
    row, images, labels, timer = measure_case(cfg)
    case_rounds, used = [], set()
    for r in range(config.rounds):
      if r:  # later rounds: the same compiled step again, right before the reference again
        seconds = timer()
        row["seconds_per_step"], row["its_per_s"] = seconds, 1.0 / seconds
      # The machine's limit again right after this round's steps: on a shared CPU it
      # drifts by tens of percent over minutes, so each round's fraction takes its own.
      round_peak = matmul_flops_per_s(config.matmul_size)
      entry = {"case": name, "round": r, "jaxinvert_its_per_s": row["its_per_s"],
               "matmul_flops_per_s": round_peak,
               "roofline_fraction": row["flops_per_step"] * row["its_per_s"] / round_peak}
      _print_jaxinvert(name, row, entry["roofline_fraction"])
      if config.reference_python:
        ref = measure_reference(cfg, workdir, name, images, labels)
        row["reference"] = ref
        used.add(ref["used"])
        entry.update({f"{label}_its_per_s": ref[label]["its_per_s"]
                      for label in ("breaching", "torch") if ref[label] is not None})
        entry["ratio_its"] = row["its_per_s"] / ref[ref["used"]]["its_per_s"]
        _print_reference(name, row, ref, config)
      case_rounds.append(entry)
    rounds.extend(case_rounds)
    row["its_per_s_rounds"] = [x["jaxinvert_its_per_s"] for x in case_rounds]
    row["its_per_s"] = float(np.median(row["its_per_s_rounds"]))
    row["seconds_per_step"] = 1.0 / row["its_per_s"]
    row["matmul_flops_per_s_rounds"] = [x["matmul_flops_per_s"] for x in case_rounds]
    row["roofline_fraction_rounds"] = [x["roofline_fraction"] for x in case_rounds]
    row["roofline_fraction"] = float(np.median(row["roofline_fraction_rounds"]))
    results["cases"][name] = row
    results[f"roofline_fraction_{name}"] = row["roofline_fraction"]
    results[f"jaxinvert_its_per_s_{name}"] = row["its_per_s"]
    torch_flops = (row.get("reference") or {}).get("torch", {}).get("flops_per_step")
    results[f"torch_flops_per_step_{name}"] = torch_flops
    results[f"reference_its_per_s_{name}"] = None
    results[f"ratio_its_{name}"] = None
    if used:
      if len(used) > 1:
        raise RuntimeError(f"case {name}: breaching ran in some rounds and not in others")
      (reference,) = used
      results[f"reference_{name}"] = reference
      for label in ("breaching", "torch"):
        if all(f"{label}_its_per_s" in x for x in case_rounds):
          results[f"{label}_its_per_s_{name}"] = float(
              np.median([x[f"{label}_its_per_s"] for x in case_rounds]))
      results[f"reference_its_per_s_{name}"] = results[f"{reference}_its_per_s_{name}"]
      # Each round's ratio compares two timings taken minutes apart at most; the median of
      # those ratios resists this machine's drift better than a ratio of medians.
      results[f"ratio_its_rounds_{name}"] = [x["ratio_its"] for x in case_rounds]
      results[f"ratio_its_{name}"] = float(np.median(results[f"ratio_its_rounds_{name}"]))
      if config.rounds > 1:
        print(f"  {name:22s} median over {config.rounds} rounds: jaxinvert/{reference} "
              f"{results[f'ratio_its_{name}']:.2f}x", flush=True)
    results[f"ratio_time_to_psnr_{name}"] = None
    if config.reference_python and name in quality:
      quality_case(cfg, workdir, name, images, labels, results)
    # After every case, so that a run cut short (a lease's time limit) keeps what it did.
    common.write_results(workdir, {**results, "complete": False})
  results["complete"] = True
  path = common.write_results(workdir, results)
  common.announce(workdir, [path, *results.get("figures", [])])
  return results



if __name__ == "__main__":
  common.script_main(run, default_config="bench_speed.py", compilation_cache=False,
                     description="Benchmark config.")
