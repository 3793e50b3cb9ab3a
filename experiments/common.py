"""Shared plumbing of the experiment scripts: config checks, victim, client, output."""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Sequence

from absl import app, flags

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_flags

from jaxinvert import checkpoint, data, models, parallel, victim
from jaxinvert.types import Model

_SETTINGS = ("fedsgd", "fedavg")
_LABEL_SOURCES = ("restored", "true", "given")


def fail(field: str, message: str) -> None:
  raise ValueError(f"config.{field}: {message}")


def choice(config, field: str, choices) -> None:
  """Raises ValueError naming ``config.<field>`` unless its value is one of ``choices``."""
  if config[field] not in choices:
    fail(field, f"{config[field]!r} is not one of {tuple(choices)}")


def validate_victim_and_data(config: ml_collections.ConfigDict) -> data.LabelDist:
  """Checks the fields every script shares; raises ValueError naming the field."""
  choice(config, "model", models.MODEL_NAMES)
  choice(config, "dataset", ("photos", *data.TFDS_DATASETS))
  for field in ("image_size", "batch_size"):
    if config[field] <= 0:
      fail(field, f"must be positive, got {config[field]}")
  for field in ("width", "num_classes", "hidden", "scan_unroll"):
    if config[field] < 0:
      fail(field, f"must be >= 0, got {config[field]}")
  if config.activation and config.activation not in [a.value for a in models.Activation]:
    fail("activation", f"{config.activation!r} is not one of "
         f"{[a.value for a in models.Activation]}")
  if config.get("conv_impl") and config.conv_impl not in [c.value for c in models.ConvImpl]:
    fail("conv_impl", f"{config.conv_impl!r} is not one of {[c.value for c in models.ConvImpl]}")
  if config.model == "convnet" and config.image_size != 32:
    fail("image_size", f"the ConvNet is defined for 32x32 images, got {config.image_size}")
  if config.dataset == "photos" and config.num_classes > len(data.PHOTO_CLASSES):
    fail("num_classes", f"photos has {len(data.PHOTO_CLASSES)} classes")
  if config.get("head_classes", 0) and config.head_classes < num_classes(config):
    fail("head_classes", f"{config.head_classes} outputs cannot label the data's "
         f"{num_classes(config)} classes (0 = as many as the data has)")
  outputs = config.get("head_classes", 0) or num_classes(config)
  if outputs < 2:
    fail("head_classes" if config.get("head_classes", 0) else "num_classes",
         f"the victim would have {outputs} output; a 1-class head's gradient is zero, so "
         "it shares nothing (at least 2)")
  try:
    return data.check_label_dist(config.label_dist, batch_size=config.batch_size,
                                 num_classes=num_classes(config))
  except ValueError as e:
    raise ValueError(f"config.label_dist: {e}") from None


def validate_setting(config: ml_collections.ConfigDict) -> None:
  choice(config, "setting", _SETTINGS)
  if config.setting == "fedavg":
    choice(config, "fedavg_method", ("unroll", "approx"))
    choice(config, "fedavg_order", ("known", "random", "average"))
    if config.fedavg_order == "average" and config.get("fedavg_order_samples", 1) < 1:
      fail("fedavg_order_samples", f"must be >= 1, got {config.fedavg_order_samples}")
    if config.local_epochs <= 0:
      fail("local_epochs", f"must be positive, got {config.local_epochs}")
    if config.local_lr <= 0:
      fail("local_lr", f"must be positive, got {config.local_lr}")
    b = local_batch_size(config)
    if b <= 0 or config.batch_size % b:
      fail("local_batch_size", f"{b} must be positive and divide batch_size "
           f"{config.batch_size}")


def num_classes(config) -> int:
  if config.num_classes:
    return config.num_classes
  if config.dataset == "photos":
    return len(data.PHOTO_CLASSES)
  return data.TFDS_DATASETS[config.dataset][0]


def scan_unroll(config) -> int | bool:
  """Local steps per scan iteration: config.scan_unroll, or 0 = all of them on CPU
  (XLA:CPU convolutions inside loops are slow, see `victim.fedavg_update`), 1 elsewhere."""
  if config.get("scan_unroll", 0) > 0:
    return int(config.scan_unroll)
  return True if jax.default_backend() == "cpu" else 1


def local_batch_size(config) -> int:
  return config.local_batch_size or config.batch_size


def build_model(config) -> Model:
  return models.get_model(config.model,
                          num_classes=config.get("head_classes", 0) or num_classes(config),
                          image_size=config.image_size, width=config.width or None,
                          activation=config.activation or None, batchnorm=config.batchnorm,
                          hidden=config.hidden,
                          conv_impl=config.get("conv_impl") or None)


def build_victim(config, key: jax.Array) -> tuple[Model, dict]:
  """The model and its weights: fresh from ``key``, or a train_victim checkpoint."""
  model = build_model(config)
  variables = model.init(key)
  if config.victim_checkpoint:
    step = None if config.victim_step < 0 else config.victim_step
    variables, _ = checkpoint.load_victim(config.victim_checkpoint, step, like=variables)
  return model, variables


def client_batch(config, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  source = data.get_source(config.dataset, image_size=config.image_size,
                           data_dir=config.data_dir or None,
                           num_classes=config.num_classes or None)
  return data.sample_batch(key, source=source, batch_size=config.batch_size,
                           label_dist=config.label_dist)


def shared_update(config, model: Model, variables, images, labels, key: jax.Array | None):
  """What the client sends: FedSGD gradient, or FedAvg (new variables, their order)."""
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  if config.setting == "fedsgd":
    return jax.jit(victim.fedsgd_update, static_argnums=0)(model.apply, variables, images,
                                                             labels)
  order = victim.epoch_orders(key if config.client_shuffles else None, config.batch_size,
                              local_epochs=config.local_epochs)
  new = jax.jit(victim.fedavg_update, static_argnums=0,
                static_argnames=("local_epochs", "local_batch_size"))(
                    model.apply, variables, images, labels, local_epochs=config.local_epochs,
                    local_batch_size=local_batch_size(config), local_lr=config.local_lr,
                    order=order)
  return new, order


def to_jsonable(value: Any) -> Any:
  if isinstance(value, ml_collections.ConfigDict):
    return to_jsonable(value.to_dict())
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return to_jsonable(np.asarray(value).tolist())
  if isinstance(value, (np.floating, float)):
    return float(value) if np.isfinite(value) else str(float(value))
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def write_results(workdir: str, results: dict[str, Any], name: str = "results.json") -> str:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name)
  with open(path, "w") as f:
    json.dump(to_jsonable(results), f, indent=1)
  return path


def announce(workdir: str, files: list[str]) -> None:
  """The log line that says where the outputs are."""
  where = os.path.abspath(workdir)
  logging.info("wrote %s to %s", ", ".join(os.path.basename(f) for f in files), where)
  print(f"jaxinvert: wrote {', '.join(os.path.basename(f) for f in files)} to {where}",
        flush=True)


def start_processes(config) -> bool:
  """Joins the multi-host runtime when ``config.distributed`` (the coordinator flags
  where JAX does not detect them); returns whether this is process 0, the one that
  writes the outputs (hosts may share the workdir)."""
  if config.distributed:
    parallel.initialize_distributed(
        coordinator_address=config.coordinator_address or None,
        num_processes=config.num_processes or None,
        process_id=config.process_id if config.process_id >= 0 else None)
  return jax.process_index() == 0


def announce_secondary(workdir: str) -> None:
  """The log line of a process other than 0: done, and who writes where."""
  print(f"jaxinvert: process {jax.process_index()} of {jax.process_count()} done; process 0 "
        f"writes the outputs to {os.path.abspath(workdir)}", flush=True)


class Timer:
  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start



def restore_labels(config, model: Model, variables, update, key: jax.Array):
  """Label counts from the shared update by ``config.label_method`` (see labels.py).

  Returns:
    ``(method name, labels.LabelEstimate)``.
  """
  from jaxinvert import labels  # pylint: disable=g-import-not-at-top
  method = config.label_method
  if method == "auto":
    method = "idlg" if config.batch_size == 1 else labels.DEFAULT_METHOD.value
  common = dict(method=labels.Method(method), features_fn=model.features,
                num_images=config.batch_size, image_shape=model.image_shape)
  if config.setting == "fedsgd":
    labels.check_update(update, variables, config.batch_size)  # the NaN check needs values
    restore = jax.jit(functools.partial(labels.restore, **common))
    return method, restore(key, update=update, variables=variables)
  steps = victim.local_steps(config.batch_size, local_epochs=config.local_epochs,
                             local_batch_size=local_batch_size(config))
  labels.check_update(labels.fedavg_gradient(victim.weight_delta(variables, update),
                                             local_lr=config.local_lr, steps=steps),
                      variables, config.batch_size)
  restore = jax.jit(functools.partial(labels.restore_fedavg, local_lr=config.local_lr,
                                      local_steps=steps, **common))
  return method, restore(key, start=variables, end=update)


_BOOLS = {"1": True, "true": True, "0": False, "false": False}


def parse_cells(config) -> list[dict]:
  """``config.cells = 'a=1,b=x;a=2'`` -> ``[{'a': 1, 'b': 'x'}, {'a': 2}]``.

  Each value is typed like the config field it overrides.
  """
  if not config.get("cells"):
    return [{}]
  cells = []
  for spec in config.cells.split(";"):
    cell = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
      field, eq, value = (s.strip() for s in item.partition("="))
      if not eq:
        fail("cells", f"{item!r} in {spec!r} is not field=value")
      if field not in config:
        fail("cells", f"unknown field {field!r} in {spec!r}")
      kind = type(config[field])
      if kind is bool:
        if value.lower() not in _BOOLS:
          fail("cells", f"{field}={value!r} in {spec!r}: expected one of {sorted(_BOOLS)}")
        cell[field] = _BOOLS[value.lower()]
        continue
      try:
        cell[field] = kind(value)
      except ValueError:
        fail("cells", f"{field}={value!r} in {spec!r} is not of type {kind.__name__} "
                      f"(the config's {field} is {config[field]!r})")
    cells.append(cell)
  return cells


def apply_cell(config, cell: dict):
  """A copy of ``config`` with the cell's overrides."""
  merged = copy.deepcopy(config)
  for k, v in cell.items():
    merged[k] = v
  return merged


CONFIGS = os.path.join(os.path.dirname(__file__), "configs")


_CACHE_ENV = "JAXINVERT_COMPILATION_CACHE"
_CACHE_DEFAULT = os.path.join("~", ".cache", "jaxinvert", "xla")


def default_compilation_cache_dir() -> str:
  """``$JAXINVERT_COMPILATION_CACHE`` if set (empty: no cache), else ~/.cache/jaxinvert/xla."""
  return os.environ.get(_CACHE_ENV, os.path.expanduser(_CACHE_DEFAULT))


def enable_compilation_cache(directory: str) -> None:
  """Points JAX's persistent compilation cache at ``directory`` ('' leaves it off).

  Compilation dominates short runs of the larger attacks on a CPU (100-130 s of XLA
  for 6 iterations of a ResNet-18 or FedAvg attack on the 2-core dev machine). The
  cache is keyed by the program, the compiler options and the JAX version, so a hit
  runs the same executable and gives the same numbers. Leaves a cache that something
  else (a test harness) already configured alone.
  """
  if not directory or jax.config.jax_compilation_cache_dir:
    return
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)


def with_xla_flags(user: str, extra: Sequence[str]) -> str:
  """``user``'s XLA_FLAGS plus each of ``extra`` whose name it does not already set
  (names compared whole: ``--xla_a`` is not set by ``--xla_a_b=1``)."""
  named = {item.split("=")[0] for item in user.split()}
  return " ".join([user, *(f for f in extra if f.split("=")[0] not in named)]).strip()


def script_main(run_fn: Callable[[Any, str], Any], *, default_config: str,
                description: str, compilation_cache: bool = True,
                xla_flags: Sequence[str] = ()) -> None:
  """The command line of every script: ``--workdir`` and ``--config`` (a get_config()
  file under experiments/configs/ by default, fields overridable as --config.x=...),
  and ``--compilation_cache_dir`` unless ``compilation_cache=False`` (the speed
  benchmarks, whose times include compilation).

  Flags are defined here, only when a module runs as a script, so the scripts can
  import each other. ``xla_flags`` are added to ``XLA_FLAGS`` before JAX starts its
  backend, each unless the user's ``XLA_FLAGS`` already names it.
  """
  flags.DEFINE_string("workdir", None, "Where results.json and figures go.")
  config_flags.DEFINE_config_file("config", os.path.join(CONFIGS, default_config), description)
  if compilation_cache:
    flags.DEFINE_string(
        "compilation_cache_dir", default_compilation_cache_dir(),
        "JAX's persistent compilation cache: a rerun with the same shapes loads the "
        "compiled attack instead of compiling it again. '' turns it off. Default: "
        f"${_CACHE_ENV}, else {_CACHE_DEFAULT}.")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.workdir:
      raise app.UsageError("--workdir is required")
    if xla_flags:
      os.environ["XLA_FLAGS"] = with_xla_flags(os.environ.get("XLA_FLAGS", ""), xla_flags)
    if compilation_cache:
      enable_compilation_cache(flags.FLAGS.compilation_cache_dir)
    run_fn(flags.FLAGS.config, flags.FLAGS.workdir)

  sys.exit(app.run(main))
