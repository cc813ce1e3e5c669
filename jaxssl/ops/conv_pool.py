"""``relu(max_pool(conv(x, w)) + b)`` as one block loop on the CPU: the conv-ReLU-pool stage of CifarNet and
AlexNet whose forward never writes the full-resolution activation to memory.

Why. In a conv -> bias -> ReLU -> max-pool stage the largest tensor is the convolution's output, at full
resolution (205 MB for CifarNet's conv1 on a rotation batch of 1,024 28x28 images): XLA writes it, reads it
back for bias and ReLU, again for the pool, again for the pool's gradient, and writes and reads its gradient.
On the 2-core machine jaxssl is developed on those memory passes cost more than conv1's arithmetic.

How. Per block of images (``lax.scan``, sized to stay in cache), the forward gathers the windows and multiplies
(as in conv.py), then max-pools the block while it is in cache, keeping each pooled value's window offset
(int8; the first maximum in row-major window order, as select-and-scatter breaks ties). Bias and ReLU go after
the pool: max commutes with adding a per-channel constant and with any non-decreasing function, so
``relu(pool(conv) + b) == pool(relu(conv + b))`` exactly, in floating point too, on a map 4x smaller. The
backward masks the output gradient by the ReLU on the small map (the bias gradient is its sum), puts it back
at the stored offsets (strided selects, no scatter), and hands the convolution's gradient to conv.py's
kernel- and input-gradient paths; the input gradient only when ``x`` needs one (not for a first layer).
Computing the input gradient inside the forward's block loop instead was measured 1.3x slower.

Measured (2-core CPU, rotation batch of 1,024 images, forward + backward): CifarNet's conv1 stage 450 -> 240
ms, conv2 stage 1,370 -> 1,305 ms; the whole rotation train step 2.05 -> 1.60 s.

Gradients equal those of ``pool(relu(conv + b))`` differentiated by XLA wherever a window's maximum is
unique; where a window ties, both take the first maximum (tests/test_ops.py).

Backbones do not call this directly: layers.conv_relu_max_pool takes an ``nnx.Conv`` and runs this loop where
the process's setting runs a CPU path (dispatch.py), the unfused layers everywhere else.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxssl.ops import onednn
from jaxssl.ops.conv import BLOCK_BYTES, block_size, conv_grads, dot, onednn_takes, out_hw, windows
from jaxssl.ops.pool import pool_with_offsets, unpool


def _shapes(x_shape, w_shape, stride, padding, window, pool_strides, pool_pads):
  _, h, w, c = x_shape
  kh, kw, _, o = w_shape
  hp, wp = h + sum(padding[0]), w + sum(padding[1])
  conv_hw = out_hw((hp, wp), (kh, kw), stride)
  pooled_hw = out_hw((conv_hw[0] + sum(pool_pads[0]), conv_hw[1] + sum(pool_pads[1])), window, pool_strides)
  # A block holds one window matrix or one conv output at a time; the larger decides the block size.
  per_image = 4 * max(conv_hw[0] * conv_hw[1] * kh * kw * c, conv_hw[0] * conv_hw[1] * o)
  return (hp, wp), conv_hw, pooled_hw, per_image


def _forward(x, w, stride, padding, window, pool_strides, pool_pads, block_bytes, backend):
  kh, kw, c, o = w.shape
  (hp, wp), conv_hw, pooled_hw, per_image = _shapes(x.shape, w.shape, stride, padding, window, pool_strides,
                                                    pool_pads)
  if backend == 'onednn':  # oneDNN's convolution writes the full map once; the pool reads it once
    y = onednn.conv_forward(x, w, stride, padding)
    # In float32: on bfloat16 maps XLA materialized the nine window slices and re-ran the compare chain inside
    # the backward's selects (3.4x slower fwd+bwd for CifarNet's conv1 stage).
    pooled, idx = pool_with_offsets(y.astype(jnp.float32), window, pool_strides, pool_pads, pooled_hw)
    return pooled.astype(x.dtype), idx
  b = x.shape[0]
  bs = block_size(b, per_image, block_bytes)
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  wm = w.reshape(kh * kw * c, o)

  def body(_, xb):
    y = dot(windows(xb, (kh, kw), stride, conv_hw), wm, ((1,), (0,))).astype(x.dtype)
    return None, pool_with_offsets(y.reshape(bs, *conv_hw, o), window, pool_strides, pool_pads, pooled_hw)

  _, (pooled, idx) = lax.scan(body, None, xp.reshape(b // bs, bs, hp, wp, c))
  return pooled.reshape(b, *pooled_hw, o), idx.reshape(b, *pooled_hw, o)


def conv_pool_relu(x: jax.Array, w: jax.Array, bias: jax.Array, stride: tuple[int, int],
                   padding: tuple[tuple[int, int], ...], window: tuple[int, int], pool_strides: tuple[int, int],
                   pool_pads: tuple[tuple[int, int], ...], block_bytes: int = BLOCK_BYTES,
                   backend: str = 'im2col') -> jax.Array:
  """``relu(max_pool(conv(x, w) + bias))`` for NHWC ``x``, HWIO ``w``, a bias per output channel and
  explicit non-negative paddings ((lo, hi) per spatial axis; the pool's padding never wins a window). ``backend``
  computes the convolution: 'im2col' (the fused block loop) or 'onednn' (onednn.py; float32, or bfloat16 where
  the CPU has oneDNN's bf16 kernels, else the fused block loop)."""
  if backend not in ('im2col', 'onednn'):
    raise ValueError(f"conv_pool_relu: backend must be 'im2col' or 'onednn', not {backend!r}")
  if backend == 'onednn' and not onednn_takes(x.dtype):
    backend = 'im2col'
  args = tuple(tuple(map(int, a)) for a in (stride, window, pool_strides))
  pads = tuple(tuple(tuple(map(int, p)) for p in pp) for pp in (padding, pool_pads))
  if min(min(map(min, p)) for p in pads) < 0:
    raise ValueError(f'conv_pool_relu: negative (cropping) padding {pads} is not supported')
  return _conv_pool_relu(x, w.astype(x.dtype), bias.astype(x.dtype), args[0], pads[0], args[1], args[2],
                         pads[1], block_bytes, backend)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7, 8, 9))
def _conv_pool_relu(x, w, bias, stride, padding, window, pool_strides, pool_pads, block_bytes, backend):
  pooled, _ = _forward(x, w, stride, padding, window, pool_strides, pool_pads, block_bytes, backend)
  return jax.nn.relu(pooled + bias)


def _fwd(x, w, bias, stride, padding, window, pool_strides, pool_pads, block_bytes, backend):
  pooled, idx = _forward(x.value, w.value, stride, padding, window, pool_strides, pool_pads, block_bytes, backend)
  y = jax.nn.relu(pooled + bias.value)
  # Whether x needs a gradient (False for a network's first layer) rides in the residuals' tree structure.
  return y, (x.value, w.value, idx, y, () if x.perturbed else None)


def _bwd(stride, padding, window, pool_strides, pool_pads, block_bytes, backend, res, gy):
  x, w, idx, y, x_perturbed = res
  if isinstance(gy, SymbolicZero):  # the output does not reach the loss
    return None if x_perturbed is None else jnp.zeros_like(x), jnp.zeros_like(w), jnp.zeros(y.shape[-1], y.dtype)
  _, conv_hw, _, _ = _shapes(x.shape, w.shape, stride, padding, window, pool_strides, pool_pads)
  gp = jnp.where(y > 0, gy, jnp.zeros((), gy.dtype))
  db = gp.sum((0, 1, 2), dtype=jnp.float32).astype(y.dtype)
  # The conv output's gradient, once for the whole batch; then the convolution's own gradients (conv.py).
  g = unpool(gp.astype(jnp.float32), idx, window, pool_strides, pool_pads, conv_hw).astype(gp.dtype)
  dx, dw = conv_grads(x, w, g, stride, padding, backend=backend, block_bytes=block_bytes,
                      need_dx=x_perturbed is not None)
  return dx, dw, db


_conv_pool_relu.defvjp(_fwd, _bwd, symbolic_zeros=True)
