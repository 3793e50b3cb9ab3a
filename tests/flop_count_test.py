"""experiments/flop_count.py: matmul and convolution FLOPs counted on the jaxpr."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import flop_count


def _conv(x, w, groups=1):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=groups,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_dot_and_conv_counts_match_their_formulas():
  a, b = jnp.ones((3, 4, 5)), jnp.ones((3, 5, 7))
  assert flop_count.jaxpr_flops(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), a, b) == (
      2 * 3 * 4 * 5 * 7, [])
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 16))
  # 'SAME' 3x3 on 8 pixels: of the 8 x 3 (position, tap) pairs per axis, 2 read padding.
  taps = (8 * 3 - 2) ** 2
  forward = 2 * 2 * 16 * 3 * taps
  assert flop_count.jaxpr_flops(_conv, x, w)[0] == forward
  # The weight gradient is a convolution of the same size (its forward pass is dead code).
  assert flop_count.jaxpr_flops(jax.grad(lambda w: _conv(x, w).sum()), w)[0] == forward
  # Depthwise: each output sums over one input feature; its weight gradient is a
  # batch-grouped convolution, which must count the same.
  wd = jnp.ones((3, 3, 1, 6))
  depthwise = 2 * 2 * 6 * 1 * taps
  assert flop_count.jaxpr_flops(lambda x, w: _conv(x, w, groups=3), x, wd)[0] == depthwise
  grad = jax.grad(lambda w: _conv(x, w, groups=3).sum())
  assert flop_count.jaxpr_flops(grad, wd)[0] == depthwise


def test_strides_and_dilation_count_only_taps_on_the_input():
  x, w = jnp.ones((1, 9, 9, 2)), jnp.ones((3, 3, 2, 4))
  strided = lambda x, w: jax.lax.conv_general_dilated(x, w, (2, 2), "VALID")
  # VALID: every tap reads the input; 4 x 4 outputs of 3 x 3 taps each.
  assert flop_count.jaxpr_flops(strided, x.transpose(0, 3, 1, 2),
                                w.transpose(3, 2, 0, 1))[0] == 2 * 4 * 2 * (4 * 3) ** 2
  # The input's gradient of a strided conv dilates the cotangent: the holes are not work,
  # so it costs what the forward pass does.
  grad_x = jax.grad(lambda x: strided(x, w.transpose(3, 2, 0, 1)).sum())
  assert flop_count.jaxpr_flops(grad_x, x.transpose(0, 3, 1, 2))[0] == 2 * 4 * 2 * 144


def test_nested_programs_loops_and_dead_code():
  m = jnp.ones((8, 8))
  one = 2 * 8 ** 3

  def scanned(m):
    return jax.lax.scan(lambda c, _: (jax.jit(lambda c: c @ m)(c), None), m, None,
                        length=5)[0]

  assert flop_count.jaxpr_flops(scanned, m) == (5 * one, [])
  branches = lambda p, m: jax.lax.cond(p, lambda m: m @ m @ m, lambda m: m @ m, m)
  assert flop_count.jaxpr_flops(branches, True, m)[0] == 2 * one  # the dearer branch

  def unused(m):
    _ = m @ m  # no output depends on it
    return m.sum()

  assert flop_count.jaxpr_flops(unused, m)[0] == 0
  looped = lambda m: jax.lax.while_loop(lambda c: c[0, 0] < 1e3, lambda c: c @ m, m)
  assert flop_count.jaxpr_flops(looped, m) == (one, ["while"])


def test_double_backward_count_is_close_to_xla_cpu():
  """On the CPU, where XLA emits convolutions itself, its cost analysis and the jaxpr
  count of a gradient-matching step (a double backward) agree closely."""
  keys = jax.random.split(jax.random.key(0), 3)
  w1 = jax.random.normal(keys[0], (3, 3, 3, 8))
  w2 = jax.random.normal(keys[1], (3, 3, 8, 8))
  target = jax.random.normal(keys[2], (8 * 8 * 8,))

  def loss(ws, x):
    h = jax.nn.relu(_conv(x, ws[0]))
    return jnp.mean((_conv(h, ws[1]).reshape(x.shape[0], -1).mean(0) - target) ** 2)

  def matching(x):
    g = jax.grad(loss)((w1, w2), x)
    return sum(jnp.sum(t ** 2) for t in g)

  step = jax.grad(matching)
  x = jnp.ones((2, 8, 8, 3))
  cost = jax.jit(step).lower(x).compile().cost_analysis()
  xla = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
  counted, loops = flop_count.jaxpr_flops(step, x)
  assert loops == []
  assert counted == pytest.approx(xla, rel=0.15)
  assert np.isfinite(counted) and counted > 0
