"""FLOPs of a JAX function counted on its jaxpr, the same on every backend.

XLA's compiled cost analysis counts the convolutions and matmuls only where XLA emits
them itself (XLA:CPU). On GPU they become library calls (cuDNN, cuBLAS) that the
analysis leaves out: on an H100 it gave 0.88 GFLOP for the ConvNet B=1 attack step that
it counts as 26.2 GFLOP on the CPU. This counter walks the traced program instead and
adds up the multiply-adds of every ``dot_general`` and ``conv_general_dilated`` (2 FLOPs
each), descending into nested jaxprs (``jit``, custom derivatives, ``cond`` branches at
their most expensive, ``scan`` bodies times their length). Elementwise work is not
counted, as in torch's ``FlopCounterMode``; work no output depends on is dropped first;
a ``while`` loop, whose trip count the jaxpr does not hold, is counted once and reported.
On the CPU the count is within 1.5 % of XLA's on `bench_speed`'s FedSGD cases and 6 %
above it on the FedAvg case (docs/speed.md, "On a GPU").
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def _dot_flops(eqn) -> float:
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
  rhs_free = np.prod([d for i, d in enumerate(rhs) if i not in (*rhs_contract, *rhs_batch)])
  return 2.0 * float(np.prod(lhs)) * float(rhs_free)


def _valid_taps(out: int, kernel: int, size: int, stride: int, pad_lo: int,
                lhs_dilation: int, rhs_dilation: int) -> int:
  """(output position, kernel tap) pairs of one spatial dimension that read the input
  rather than its padding or the holes of its dilation."""
  q = (np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * rhs_dilation - pad_lo)
  return int(np.sum((q >= 0) & (q <= (size - 1) * lhs_dilation) & (q % lhs_dilation == 0)))


def _conv_flops(eqn) -> float:
  """2 x (output batch x output features) x kernel input features x the taps that read
  real input. Counting only those matters: a derivative of a weight gradient is a
  convolution whose window is the whole image over a small padded input, and most of
  its taps read padding (XLA's cost analysis does not count them either). Feature and
  batch groups already shrink the kernel's and the output's shapes to one group's."""
  p = eqn.params
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  out = eqn.outvars[0].aval.shape
  dn = p["dimension_numbers"]
  taps = 1
  for i, (o_dim, k_dim, l_dim) in enumerate(zip(dn.out_spec[2:], dn.rhs_spec[2:],
                                                dn.lhs_spec[2:])):
    lhs_dil = p["lhs_dilation"][i] if p["lhs_dilation"] else 1
    rhs_dil = p["rhs_dilation"][i] if p["rhs_dilation"] else 1
    taps *= _valid_taps(out[o_dim], rhs[k_dim], lhs[l_dim], p["window_strides"][i],
                        p["padding"][i][0], lhs_dil, rhs_dil)
  return 2.0 * out[dn.out_spec[0]] * out[dn.out_spec[1]] * rhs[dn.rhs_spec[1]] * taps


def _as_jaxpr(value: Any):
  """The open jaxpr in ``value`` (a Jaxpr, or a ClosedJaxpr wrapping one), else None.
  Duck-typed: the closed/open split of jaxprs has moved between JAX versions."""
  inner = getattr(value, "jaxpr", None)
  if hasattr(inner, "eqns"):
    return inner
  return value if hasattr(value, "eqns") else None


def sub_jaxprs(value: Any):
  """The open jaxprs in an equation's parameter ``value`` (one, or a tuple / list of them,
  e.g. `cond`'s branches); nothing for any other parameter."""
  jaxpr = _as_jaxpr(value)
  if jaxpr is not None:
    yield jaxpr
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from sub_jaxprs(v)


def _count(jaxpr, loops: list[str]) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "cond":
      total += max(_count(j, loops) for j in sub_jaxprs(eqn.params["branches"]))
    else:
      inner = sum(_count(j, loops) for v in eqn.params.values() for j in sub_jaxprs(v))
      if name == "scan":
        inner *= eqn.params["length"]
      elif name == "while" and inner:
        loops.append("while")
      total += inner
  return total


def jaxpr_flops(fn: Callable[..., Any], *args: Any) -> tuple[float, list[str]]:
  """FLOPs of ``fn(*args)`` by its jaxpr's matmuls and convolutions.

  Args:
    fn: a JAX-traceable function.
    *args: example arguments (arrays or ShapeDtypeStructs); nothing is computed.

  Returns:
    ``(flops, uncounted_loops)``: the count, and the names of loops whose body was
    counted once because the trip count is not static (empty when the count is exact).
  """
  loops: list[str] = []
  jaxpr = _as_jaxpr(jax.make_jaxpr(fn)(*args))
  return _count(_dead_code_eliminated(jaxpr), loops), loops


def _dead_code_eliminated(jaxpr):
  """``jaxpr`` without the equations no output depends on, as XLA would drop them.

  A traced derivative holds such work (a forward pass whose value only its JVP needed):
  on the ConvNet B=1 attack step of `bench_speed` the count is 41.1 GFLOP with it, 26.1
  without, against XLA:CPU's 26.2. JAX's own pass, a private API: where it is missing, the jaxpr is
  counted as traced (an overcount)."""
  try:
    from jax._src.interpreters import partial_eval as pe  # pylint: disable=g-import-not-at-top
    return pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars), instantiate=True)[0]
  except (ImportError, AttributeError, TypeError):
    return jaxpr
