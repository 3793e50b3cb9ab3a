"""Command-line experiments on top of the jaxinvert library.

Importing this package sets ``jax_threefry_partitionable=False`` for every script:
on XLA:CPU the partitionable threefry lowering compiles about 7x slower (3.4 s vs
0.47 s for one `jax.random.uniform`, jax 0.10.2, measured on the 2-core dev machine),
which dominated start-up of the larger models. It changes the random bits, so a seed
reproduces results under the same setting; the library itself never touches it.
"""

import jax

jax.config.update("jax_threefry_partitionable", False)
