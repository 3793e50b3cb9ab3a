"""breaching 0.1.2 (Geiping et al.'s PyTorch framework) timed on a `bench_speed` case.

Not part of jaxinvert and not imported by it: `bench_speed` runs this file with the
Python of a separate environment (``requirements-bench.txt``):

  python experiments/breaching_reference.py --case=case.npz --out=row.json

What it takes to run breaching 0.1.2 here, offline, on the CPU build of torch 2.13:
- PyPI's torchvision does not match that torch and fails at import while registering
  meta kernels for its compiled ops (``operator torchvision::nms does not exist``);
  breaching never calls those ops, so an empty ``torchvision._meta_registrations`` is put
  in ``sys.modules`` before the import.
- The user's dataset download is replaced by a payload built by hand: the server's
  model and the shared update on the case's images, computed here with the model and
  loss breaching constructs (its CIFAR-10 normalisation applied).
- LPIPS is never evaluated (no metrics are computed here).
- The client computes its update with BatchNorm on batch statistics (``model.train()``),
  as jaxinvert's victim and the plain-PyTorch reference do. breaching's honest server
  ships its public BatchNorm buffers by default, and its attacker then runs the model in
  eval mode (running statistics): a different network from the one that produced the
  update. So the attacker gets no buffers and runs in train mode, as breaching does when
  neither server nor user sends buffers. (With the mismatch, 300 iterations on the
  ResNet-18 B=4 case of `bench_speed` gave 17.31 dB; matched, 14.48 dB.)

The attack is breaching's ``invertinggradients`` configuration (cosine similarity + TV,
signed Adam, boxed) with the case's step size and TV weight, run for warmup + timed
iterations; ``torch.optim.Adam.step`` is wrapped to timestamp every iteration, and seconds
per step are the time from the end of the last warm-up step to the end of the last step,
over the timed steps (set-up and the final scoring are excluded). On the GPU when torch
sees one, with `torch.cuda.synchronize` before each timestamp. FedAvg cases use
breaching's multi-step objective with the shared weight difference as the "gradient" and
the local hyperparameters (lr, steps, data per step, labels per step) the user would
provide.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import types

sys.modules.setdefault("torchvision._meta_registrations",
                       types.ModuleType("torchvision._meta_registrations"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import breaching  # noqa: E402
# Run as a script, so its own folder is on sys.path: the plain-PyTorch reference beside it.
from torch_reference import environment, step_row, write_row  # noqa: E402

_MODELS = {"convnet": "ConvNet", "resnet18": "resnet18"}


def _shared_update(model, loss_fn, images, labels, case):
  params = list(model.parameters())
  if case["setting"] == "fedsgd":
    loss = loss_fn(model(images), labels)
    return [g.detach() for g in torch.autograd.grad(loss, params)], None
  lbs, lr, epochs = case["local_batch_size"], case["local_lr"], case["local_epochs"]
  start = [p.detach().clone() for p in params]
  labels_per_step = []
  with torch.no_grad():
    for _ in range(epochs):
      for i in range(0, images.shape[0], lbs):
        with torch.enable_grad():
          loss = loss_fn(model(images[i:i + lbs]), labels[i:i + lbs])
          grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads):
          p -= lr * g
        labels_per_step.append(labels[i:i + lbs])
  delta = [p.detach() - s for p, s in zip(params, start)]
  with torch.no_grad():
    for p, s in zip(params, start):
      p.copy_(s)
  hyper = dict(lr=lr, steps=len(labels_per_step), data_per_step=lbs, labels=labels_per_step)
  return delta, hyper


@contextlib.contextmanager
def _after_each_adam_step(callback):
  """Calls ``callback(optimizer, n)`` after the n-th `torch.optim.Adam.step` (n from 1)
  inside the block; breaching's attack steps with `torch.optim.Adam`."""
  adam_step, count = torch.optim.Adam.step, [0]

  def wrapped(self, *args, **kwargs):
    out = adam_step(self, *args, **kwargs)
    count[0] += 1
    callback(self, count[0])
    return out

  torch.optim.Adam.step = wrapped
  try:
    yield
  finally:
    torch.optim.Adam.step = adam_step


def _quality_run(cfg, server, payload, shared, setup, iterations, mean, std,
                 record_every: int) -> dict:
  """breaching's default `invertinggradients` attack (its step size, TV weight, step-lr
  schedule, one trial) with ``max_iterations = iterations``: wall seconds of the whole
  ``reconstruct`` call and the reconstruction in [0, 1], NHWC (breaching's answer: its
  lowest-objective candidate). With ``record_every > 0`` also the candidate every that
  many Adam steps and the wall seconds at which it was taken (``trajectory``), so the
  PSNR breaching had along the way can be measured; the copy to host costs a
  synchronisation per snapshot, counted in its time."""
  cfg.attack.optim.max_iterations = iterations
  attacker = breaching.attacks.prepare_attack(server.model, server.loss, cfg.attack, setup)
  sync = torch.cuda.synchronize if setup["device"].type == "cuda" else (lambda: None)
  to_pixels = lambda x: (x.detach().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1)
  snapshots: list[tuple[int, float, np.ndarray]] = []

  def record(optimizer, step):
    if record_every and step % record_every == 0:
      candidate = optimizer.param_groups[0]["params"][0]
      snapshots.append((step, time.perf_counter() - start, to_pixels(candidate).numpy()))

  sync()
  start = time.perf_counter()
  with _after_each_adam_step(record):
    out, _ = attacker.reconstruct([payload], [shared], {}, dryrun=False)
    sync()
  seconds = time.perf_counter() - start
  images = to_pixels(out["data"])
  trajectory = None
  if snapshots:
    trajectory = {"steps": np.array([s[0] for s in snapshots]),
                  "seconds": np.array([s[1] for s in snapshots]),
                  "images": np.stack([s[2] for s in snapshots])}
  return {"seconds": seconds, "iterations": iterations, "images": images.numpy(),
          "trajectory": trajectory, "record_every": record_every,
          "step_size": float(cfg.attack.optim.step_size),
          "tv": float(cfg.attack.regularization.total_variation.scale),
          "schedule": str(cfg.attack.optim.step_size_decay), **environment(setup["device"]),
          "implementation": "breaching 0.1.2 default invertinggradients "
                            "(experiments/breaching_reference.py --quality-iterations)"}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--case", required=True, help=".npz written by bench_speed")
  parser.add_argument("--out", required=True, help="JSON row to write")
  parser.add_argument("--quality-iterations", type=int, default=0,
                      help="> 0: run breaching's default attack for this many iterations "
                      "and save its reconstruction instead of timing steps")
  parser.add_argument("--record-every", type=int, default=0,
                      help="with --quality-iterations: also save the candidate every N "
                      "steps (<out>_trajectory.npz)")
  args = parser.parse_args()
  raw = np.load(args.case)
  case = {k: raw[k].item() for k in raw.files if raw[k].ndim == 0}
  if case["model"] not in _MODELS:
    raise SystemExit(f"breaching_reference: no breaching model for {case['model']!r}")
  if case["width"] != 64:  # its named models fix the width; timing another net misleads
    raise SystemExit(f"breaching_reference: breaching's {_MODELS[case['model']]} has width 64 "
                     f"only, the case asks for {case['width']}")
  torch.manual_seed(0)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  setup = dict(device=device, dtype=torch.float)
  cfg = breaching.get_config(overrides=["case=1_single_image_small", "attack=invertinggradients"])
  cfg.case.model = _MODELS[case["model"]]
  cfg.case.data.classes = int(case["num_classes"])
  model, loss_fn = breaching.cases.construct_model(cfg.case.model, cfg.case.data, pretrained=False)
  server = breaching.cases.construct_server(model, loss_fn, cfg.case, setup)
  # No public buffers: breaching's attacker then runs BatchNorm in train mode, the mode
  # the update below is computed in (see the module docstring).
  payload = dict(server.distribute_payload(), buffers=None)
  model.to(device)
  model.train()  # BatchNorm on batch statistics, as a client computes its update

  mean = torch.as_tensor(cfg.case.data.mean)[None, :, None, None]
  std = torch.as_tensor(cfg.case.data.std)[None, :, None, None]
  images = ((torch.from_numpy(raw["images"]).permute(0, 3, 1, 2) - mean) / std).to(device)
  labels = torch.from_numpy(raw["labels"]).long().to(device)
  update, hyper = _shared_update(model, loss_fn, images, labels, case)
  shared = dict(gradients=update, buffers=None,
                metadata=dict(num_data_points=images.shape[0], labels=labels,
                              local_hyperparams=hyper))

  cfg.attack.optim.callback = 10 ** 9  # no printing inside the loop
  if args.quality_iterations:
    row = _quality_run(cfg, server, payload, shared, setup, args.quality_iterations, mean, std,
                       args.record_every)
    np.save(args.out.replace(".json", "_images.npy"), row.pop("images"))
    trajectory = row.pop("trajectory")
    if trajectory is not None:
      np.savez(args.out.replace(".json", "_trajectory.npz"), **trajectory)
    write_row(args.out, row)
    return
  cfg.attack.optim.step_size = float(case["lr"])
  cfg.attack.regularization.total_variation.scale = float(case["tv"])

  warmup, timed = int(case["warmup"]), int(case["timed_steps"])
  if warmup < 1 or timed < 1:
    raise SystemExit("breaching_reference: warmup and timed_steps must be >= 1")
  stamps: list[float] = []

  def stamp(optimizer, step):
    del optimizer, step
    sync()
    stamps.append(time.perf_counter())

  cfg.attack.optim.max_iterations = warmup + timed
  attacker = breaching.attacks.prepare_attack(server.model, server.loss, cfg.attack, setup)
  with _after_each_adam_step(stamp):
    attacker.reconstruct([payload], [shared], {}, dryrun=False)
  if len(stamps) != warmup + timed:
    raise SystemExit(f"breaching_reference: expected {warmup + timed} Adam steps, "
                     f"timed {len(stamps)}")
  per_step = (stamps[-1] - stamps[warmup - 1]) / timed
  write_row(args.out, step_row(per_step, device,
                               "breaching 0.1.2 (experiments/breaching_reference.py)"))


if __name__ == "__main__":
  main()
