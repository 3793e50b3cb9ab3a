"""Shared fixtures and settings that keep the suite fast on a 2-core CPU.

Most of the suite's time is XLA compilation (an unrolled FedAvg attack step with L-BFGS
took 52 s of a 93 s test to compile on a 2-core AVX2 machine). Two settings cut it:

* XLA:CPU compiles with LLVM optimisation level 0 (``--xla_backend_optimization_level=0``,
  appended to any ``XLA_FLAGS`` given). That is code generation only: the HLO programs, and so
  the maths under test, are the ones users run; the numbers may differ at rounding level.
  That test took 48 s instead of 93 s. The regression test of the NaN max-pool derivative
  (`models_test.test_attack_gradient_finite_on_wide_convnet`), the one test about rounding,
  still fails at this level on the code it guards against (checked by re-applying it).
* JAX's persistent compilation cache, in a directory that lives as long as the test
  run and is shared by its processes, so that a program compiled twice (the same attack
  from two runs of a script, or in both xdist workers) is compiled once.

`make test` also runs the suite on 2 processes (pytest-xdist): compilation is
single-threaded.
"""

import atexit
import fcntl
import json
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest

import experiments  # noqa: F401  (sets jax_threefry_partitionable=False, as the scripts do)
from jaxinvert import models

# One cache for the whole run: the first process to import this file (pytest itself, or
# pytest-xdist's controller, which starts the workers after loading it) creates it and
# removes it at exit; the workers inherit its path, so a program one worker compiled is
# loaded by the other (an entry read while being written is a cache miss and a warning).
_CACHE = os.environ.get("JAXINVERT_TEST_XLA_CACHE")
if not _CACHE or not os.path.isdir(_CACHE):
  _CACHE = tempfile.mkdtemp(prefix="jaxinvert-test-xla-cache-")
  os.environ["JAXINVERT_TEST_XLA_CACHE"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Scripts the tests start as subprocesses use the same cache, not ~/.cache/jaxinvert.
os.environ["JAXINVERT_COMPILATION_CACHE"] = _CACHE


@pytest.fixture(scope="session")
def run_once(tmp_path_factory):
  """``run_once(name, compute)``: ``compute()`` (a JSON-able result) once per test session.

  Under pytest-xdist a module- or session-scoped fixture runs once per worker, and again
  whenever a worker comes back to its module after tests of another, so the tests that
  read one expensive subprocess (`parallel_test`, `multihost_test`) would start it several
  times. The first caller computes under a file lock in the session's shared temporary
  directory (the workers' common parent); the others read the result from there.
  (`--dist loadgroup` cannot do this here: pytest-xdist 3.8 names groups by rewriting
  ``item._nodeid``, which pytest 9.2 no longer reads.)
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent

  def run(name: str, compute):
    path = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not path.exists():
        path.write_text(json.dumps(compute()))
    return json.loads(path.read_text())

  return run


@pytest.fixture(scope="session")
def heavy_compile_options():
  """``compiler_options`` for programs that run thousands of small iterations (the logit
  fit's Levenberg-Marquardt steps): LLVM level 2 instead of the suite's level 0. Same HLO
  program, so the same maths; it compiles a few seconds longer and runs about 4x faster."""
  return {"xla_backend_optimization_level": 2}


@pytest.fixture(scope="session")
def tiny_lenet():
  """The runner, attack and FedAvg tests' victim. XLA's own convolutions: the default on
  CPU (`ConvImpl.MATMUL_DW`, a custom VJP) traces and compiles about twice as long, which
  doubled runner_test's time; models_test checks the two agree to second order, and the
  script tests run the default."""
  model = models.get_model("lenet", num_classes=5, image_size=8, width=3, conv_impl="xla")
  return model, jax.jit(model.init)(jax.random.key(0))
