"""A convolution whose weight gradient is formed as matmuls, for XLA:CPU.

On XLA:CPU (jax 0.10.2) the weight-gradient ("backward filter") convolution of a
3x3 layer ran at 3-23 GFLOP/s against 38-71 GFLOP/s for the forward and the input
gradient (measured when this module was written). Gradient inversion differentiates
the parameter gradient once more, so these convolutions and their derivatives dominate an
attack step. `conv_general_dilated` computes the forward pass and the input gradient
with XLA's convolutions, and the weight gradient as matmuls (`weight_gradient`), whose
derivatives are matmuls too.

Every derivative of the module stays on these rules: the forward rule calls the custom
convolution itself, so a derivative taken through it (the forward pass inside a local
step of unrolled FedAvg, whose weights depend on the images) is again a matmul weight
gradient; and the input gradient has its own rule, whose derivative with respect to the
weights is a matmul weight gradient too. Without the first, XLA formed 24
backward-filter convolutions in a FedAvg attack step (ConvNet, 4 local steps).

Inside a loop (the `lax.scan` of FedAvg's local steps) XLA:CPU's convolutions ran far
below their speed outside it: see `jaxinvert.victim.fedavg_update`'s ``unroll``. We also
tried writing the whole convolution as per-tap matmuls: 2.7x slower than this module for a
FedSGD step and 2.6x-2.8x slower than this module in an unrolled FedAvg step, so it is
not offered.

Same signature as `jax.lax.conv_general_dilated`; layouts other than NHWC/HWIO,
dilation or grouped convolutions fall back to XLA's convolution.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))


def _xla_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def weight_gradient(x: jax.Array, ct: jax.Array, kernel_shape, strides, padding) -> jax.Array:
  """d(conv(x, w))/dw contracted with the cotangent ``ct``, as matmuls.

  With stride 1 along the width and at most 25 % zero columns added (maps of 8 pixels
  and wider for a 3x3 kernel), one block matmul, `_block_weight_gradient`; otherwise one
  matmul per kernel tap, `_tap_weight_gradient`. Same values up to float rounding.

  Args:
    x: ``[B, H, W, C_in]`` input.
    ct: ``[B, H_out, W_out, C_out]`` cotangent of the output.
    kernel_shape: ``(KH, KW, C_in, C_out)``.
    strides: ``(sh, sw)``.
    padding: ``((top, bottom), (left, right))``.

  Returns:
    ``[KH, KW, C_in, C_out]``.
  """
  padded_width = x.shape[2] + sum(padding[1])
  if strides[1] == 1 and padded_width <= 1.25 * ct.shape[2]:
    return _block_weight_gradient(x, ct, kernel_shape, strides, padding)
  return _tap_weight_gradient(x, ct, kernel_shape, strides, padding)


def _tap_weight_gradient(x, ct, kernel_shape, strides, padding):
  """`weight_gradient` as one ``(C_in x M) @ (M x C_out)`` matmul per kernel tap.

  ``M`` = batch x output pixels; the input window of every tap is sliced (copied) first.
  """
  kh, kw, c_in, c_out = kernel_shape
  (sh, sw), (pad_h, pad_w) = strides, padding
  xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  _, h_out, w_out, _ = ct.shape
  ct_matrix = ct.reshape(-1, c_out)
  taps = []
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw, :]
      taps.append(patch.reshape(-1, c_in).T @ ct_matrix)
  return jnp.stack(taps).reshape(kh, kw, c_in, c_out)


def _block_weight_gradient(x, ct, kernel_shape, strides, padding):
  """`weight_gradient` as one ``(KH C_in x M') @ (M' x KW C_out)`` matmul.

  dw[i, j] = sum_{b,h,w} xp[b, sh h + i, w + j] ct[b, h, w] (stride 1 along the width).
  The row offset i goes into the input: KH row-shifted copies of the padded input,
  side by side on the channel axis. The column offset j goes into the cotangent instead:
  KW copies of ``ct``, each zero-padded to the padded input's width and shifted by j,
  so that sum_w xp[., w + j] ct[., w] = sum_w' xp[., w'] ct_j[., w'] over all padded
  columns w' (``M'`` = B x H_out x padded width). Block (i, j) of the product is the
  tap (i, j). Against `_tap_weight_gradient` it copies KH + KW arrays instead of KH x KW
  and runs one large matmul instead of KH x KW small ones, for (padded width / W_out) - 1
  extra FLOPs (zeros): a FedAvg attack step on ConvNet w64 ran 12 % faster on XLA:CPU.
  """
  kh, kw, c_in, c_out = kernel_shape
  sh, (pad_h, pad_w) = strides[0], padding
  xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  _, h_out, w_out, _ = ct.shape
  padded_width = xp.shape[2]
  rows = jnp.concatenate([xp[:, i:i + sh * (h_out - 1) + 1:sh] for i in range(kh)], axis=-1)
  cols = jnp.concatenate(
      [jnp.pad(ct, ((0, 0), (0, 0), (j, padded_width - w_out - j), (0, 0)))
       for j in range(kw)], axis=-1)
  blocks = rows.reshape(-1, kh * c_in).T @ cols.reshape(-1, kw * c_out)
  return blocks.reshape(kh, c_in, kw, c_out).transpose(0, 2, 1, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
  return _xla_conv(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, ct):
  x, w = residuals
  return (_input_gradient(ct, w, x.shape, strides, padding),
          weight_gradient(x, ct, w.shape, strides, padding))


_conv.defvjp(_conv_fwd, _conv_bwd)


def _xla_input_gradient(ct, w, x_shape, strides, padding):
  _, input_vjp = jax.vjp(lambda a: _xla_conv(a, w, strides, padding),
                         jnp.zeros(x_shape, ct.dtype))
  return input_vjp(ct)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _input_gradient(ct, w, x_shape, strides, padding):
  """d(conv(x, w))/dx contracted with ``ct`` (XLA's transposed convolution).

  Its own derivative with respect to ``w`` is again a weight gradient: with
  <g, J_x^T ct> = <conv(g, w), ct>, d/dw = weight_gradient(g, ct) and d/dct = conv(g, w).
  Unrolled FedAvg needs it (the weights of later local steps depend on the images);
  without this rule XLA would form it as a backward-filter convolution again.
  """
  return _xla_input_gradient(ct, w, x_shape, strides, padding)


def _input_gradient_fwd(ct, w, x_shape, strides, padding):
  return _xla_input_gradient(ct, w, x_shape, strides, padding), (ct, w)


def _input_gradient_bwd(x_shape, strides, padding, residuals, g):
  ct, w = residuals
  return _conv(g, w, strides, padding), weight_gradient(g, ct, w.shape, strides, padding)


_input_gradient.defvjp(_input_gradient_fwd, _input_gradient_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """`jax.lax.conv_general_dilated` with matmul weight gradients (NHWC/HWIO, no dilation)."""
  plain = (feature_group_count == 1 and batch_group_count == 1
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1)))
           and lhs.ndim == 4 and precision is None and preferred_element_type is None)
  if plain and dimension_numbers is not None:
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    plain = dims == _NHWC
  if not plain:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return _conv(lhs, rhs, tuple(int(s) for s in window_strides), padding)
