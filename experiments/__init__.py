"""Command-line experiments on top of the jaxinvert library.

Importing this package sets two JAX options for every script (the library itself never
touches them):

- ``jax_threefry_partitionable=False``: on XLA:CPU the partitionable threefry lowering
  compiles about 7x slower (3.4 s vs 0.47 s for one `jax.random.uniform`, jax 0.10.2,
  measured on the 2-core dev machine), which dominated start-up of the larger models. It
  changes the random bits, so a seed reproduces results under the same setting.
- ``jax_default_matmul_precision="highest"``: on GPU, XLA otherwise runs float32
  matmuls and convolutions in TF32, and gradient matching needs the full float32
  gradient: the LeNet B=1 demo reached 16.07 dB on an H200 with the default precision
  against 48.85 dB on the CPU. No effect on the CPU, where float32 is always full.
  Override per run with ``JAX_DEFAULT_MATMUL_PRECISION`` only to measure that trade-off.
"""

import os

import jax

jax.config.update("jax_threefry_partitionable", False)
jax.config.update("jax_default_matmul_precision",
                  os.environ.get("JAX_DEFAULT_MATMUL_PRECISION", "highest"))
