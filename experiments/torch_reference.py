"""Plain-PyTorch reference of the attack step timed by `experiments.bench_speed`.

Not part of jaxinvert and not imported by it: `bench_speed` runs this file with the
Python of a separate environment that has PyTorch (``requirements-bench.txt``):

  python experiments/torch_reference.py --case=case.npz --out=row.json

It runs beside breaching 0.1.2 (`experiments/breaching_reference.py`) and stands in for
it on a case breaching cannot run. It computes the same step as the jaxinvert case: the
victim's update on the dummy images (FedSGD: gradient of the mean cross-entropy, BatchNorm
on batch statistics; FedAvg: local SGD unrolled with ``create_graph=True``), cosine
distance to the shared update (Geiping et al., NeurIPS 2020) + anisotropic TV, then one
signed-Adam step and a clip to [0, 1] -- breaching's default recipe for these models.
The architectures follow breaching's ConvNet and a CIFAR ResNet-18 (3x3 stem).

The ``.npz`` holds ``images`` (NHWC float32 in [0, 1]), ``labels``, and the scalars
``model``, ``width``, ``num_classes``, ``setting``, ``local_epochs``,
``local_batch_size``, ``local_lr``, ``tv``, ``lr``, ``warmup``, ``timed_steps``. Weights
are PyTorch's default initialisation (seeded), so only speed is compared, never values.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode


def convnet(width: int, num_classes: int) -> nn.Module:
  layers, c_in = [], 3
  for item in (1, 2, 2, 4, 4, 4, "pool", 4, 4, "pool"):
    if item == "pool":
      layers.append(nn.MaxPool2d(3))
      continue
    layers += [nn.Conv2d(c_in, item * width, 3, padding=1), nn.BatchNorm2d(item * width),
               nn.ReLU()]
    c_in = item * width
  return nn.Sequential(*layers, nn.Flatten(), nn.Linear(36 * width, num_classes))


class _Block(nn.Module):

  def __init__(self, c_in: int, c_out: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c_out)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out)
    self.shortcut = nn.Sequential()
    if stride != 1 or c_in != c_out:
      self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                    nn.BatchNorm2d(c_out))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet18(width: int, num_classes: int) -> nn.Module:
  layers, c_in = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                  nn.ReLU()], width
  for stage, mult in enumerate((1, 2, 4, 8)):
    for block in range(2):
      stride = 2 if stage > 0 and block == 0 else 1
      layers.append(_Block(c_in, mult * width, stride))
      c_in = mult * width
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(c_in, num_classes))


def tv(x: torch.Tensor) -> torch.Tensor:
  return ((x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean()
          + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean())


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
  dot = sum((x * y).sum() for x, y in zip(a, b))
  na = sum((x * x).sum() for x in a)
  nb = sum((y * y).sum() for y in b)
  return 1 - dot / (na.sqrt() * nb.sqrt() + 1e-12)


class FlopCount(TorchDispatchMode):
  """Counts the FLOPs of every operator run inside it, with torch's own per-operator
  formulas (`torch.utils.flop_counter`, the ones `FlopCounterMode` uses: convolutions and
  their backward, matmuls; elementwise work is not counted, as in XLA's figure for
  convolutions). A plain dispatch mode, because `FlopCounterMode`'s module hooks fail
  under `torch.autograd.grad`, which the attack step calls."""

  def __init__(self):
    super().__init__()
    from torch.utils import flop_counter
    self._formulas = flop_counter.flop_registry
    self.total = 0

  def __torch_dispatch__(self, func, types, args=(), kwargs=None):
    kwargs = kwargs or {}
    out = func(*args, **kwargs)
    formula = self._formulas.get(func._overloadpacket)
    if formula is not None:  # called as FlopCounterMode calls it (the formulas take shapes)
      self.total += formula(*args, **kwargs, out_val=out)
    return out


def environment(device: torch.device) -> dict:
  """What a row records about the PyTorch that produced it (on a GPU: which card, and
  whether convolutions and matmuls may use TF32, PyTorch's defaults being yes and no)."""
  env = {"torch": torch.__version__, "threads": torch.get_num_threads(),
         "device": str(device)}
  if device.type == "cuda":
    env.update(device_name=torch.cuda.get_device_name(device),
               cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
               matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
  return env


def step_row(seconds_per_step: float, device: torch.device, implementation: str) -> dict:
  """The timing row `bench_speed` reads back (also used by breaching_reference.py)."""
  return {"seconds_per_step": seconds_per_step, "its_per_s": 1.0 / seconds_per_step,
          **environment(device), "implementation": implementation}


def write_row(path: str, row: dict) -> None:
  with open(path, "w") as f:
    json.dump(row, f)
  print(json.dumps(row))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--case", required=True, help=".npz written by bench_speed")
  parser.add_argument("--out", required=True, help="JSON row to write")
  args = parser.parse_args()
  case = np.load(args.case)
  scalar = lambda k: case[k].item()
  torch.manual_seed(0)
  build = {"convnet": convnet, "resnet18": resnet18}.get(scalar("model"))
  if build is None:
    raise SystemExit(f"torch_reference: no PyTorch model for {scalar('model')!r}")
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  model = build(int(scalar("width")), int(scalar("num_classes"))).to(device)
  model.train()  # BatchNorm on batch statistics, as a client computes its update
  params = {k: v.detach() for k, v in model.named_parameters()}
  names = list(params)
  images = torch.from_numpy(case["images"]).permute(0, 3, 1, 2).contiguous().to(device)
  labels = torch.from_numpy(case["labels"]).long().to(device)
  loss_fn = nn.CrossEntropyLoss()

  if scalar("setting") == "fedsgd":
    def update(x, create_graph):
      p = {k: v.requires_grad_(True) for k, v in params.items()}
      loss = loss_fn(functional_call(model, p, (x,)), labels)
      return list(torch.autograd.grad(loss, [p[k] for k in names], create_graph=create_graph))
  else:
    epochs, lbs, lr = (int(scalar("local_epochs")), int(scalar("local_batch_size")),
                       float(scalar("local_lr")))

    def update(x, create_graph):
      p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
      for _ in range(epochs):
        for start in range(0, x.shape[0], lbs):
          loss = loss_fn(functional_call(model, p, (x[start:start + lbs],)),
                         labels[start:start + lbs])
          grads = torch.autograd.grad(loss, [p[k] for k in names], create_graph=True)
          p = {k: p[k] - lr * g for k, g in zip(names, grads)}
      return [p[k] - params[k] for k in names]

  target = [t.detach() for t in update(images, create_graph=False)]
  dummy = torch.rand_like(images).requires_grad_(True)
  opt = torch.optim.Adam([dummy], lr=float(scalar("lr")))
  tv_weight = float(scalar("tv"))

  def step():
    opt.zero_grad()
    loss = cosine(update(dummy, create_graph=True), target) + tv_weight * tv(dummy)
    (grad,) = torch.autograd.grad(loss, [dummy])
    dummy.grad = grad.sign()  # signed Adam
    opt.step()
    with torch.no_grad():
      dummy.clamp_(0, 1)
    return loss.detach()

  for _ in range(int(scalar("warmup"))):
    step()
  sync()
  start = time.perf_counter()
  for _ in range(int(scalar("timed_steps"))):
    step()
  sync()
  seconds = (time.perf_counter() - start) / int(scalar("timed_steps"))
  row = step_row(seconds, device, "plain PyTorch (experiments/torch_reference.py)")
  try:  # one more step, after the timed ones, to count its work
    with FlopCount() as count:
      step()
    row["flops_per_step"] = float(count.total)
  except Exception as e:  # pylint: disable=broad-except  (private torch API; speed stands)
    row["flops_per_step"], row["flops_error"] = None, f"{type(e).__name__}: {e}"
  write_row(args.out, row)


if __name__ == "__main__":
  main()
