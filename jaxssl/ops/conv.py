"""2-D convolution whose kernel gradient is a blocked matrix product (im2col), for the CPU.

Why. XLA's CPU convolution runs the forward pass and the input gradient at a useful speed, but its kernel
gradient (a convolution whose "kernel" is the whole output map) is 3-5x slower: on the 2-core machine jaxssl is
developed on, CifarNet's 5x5x64x64 layer at batch 256 took ~150 ms forward, ~150 ms for the input gradient and
~500 ms for the kernel gradient. The same arithmetic as one matrix product per small block of images,
accumulated over the blocks, took ~125-180 ms.

How. A custom VJP: the forward pass and the input gradient are XLA's own convolutions; the kernel gradient
is, for each block of images (``lax.scan``), the k*k shifted windows of the padded input gathered into one
[pixels, k*k*C] matrix, transposed and multiplied by the output gradient seen as [pixels, O], summed over the
blocks. Blocks are sized so one block's window matrix stays in cache (``block_bytes``): materializing the window
matrix of the whole batch (321 MB for that layer) costs more than the arithmetic it saves. A gathered forward
pass and input gradient were measured too: at best ~25% faster than XLA's, and they tripled the compile time of
deep ResNets, so both stay XLA's.

Numerics are those of a float32 dot with float32 accumulation: gradients equal XLA's to float32 rounding
(tests/test_ops.py). The step stays a pure, jittable function.

Per backend. ``impl='auto'`` uses this path only when the default backend is a single CPU device; on GPU and
TPU XLA's own convolutions (cuDNN, the TPU's MXU) are the right choice, so 'auto' leaves them alone, and so it
does with several CPU devices, whose data-parallel sharding of the batch the blocked loop would cut across.
Shapes the fast path does not cover (dilation, feature groups, layouts other than NHWC/HWIO) go to ``lax``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'xla', 'im2col')

_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # what nnx.Conv passes for 2-D
_BLOCK_BYTES = 8 << 20  # per block of images; 1-16 MiB measured on ResNet-18 and CifarNet shapes, 8 best overall


def use_im2col(impl: str) -> bool:
  if impl not in IMPLS:
    raise ValueError(f"unknown conv impl '{impl}'; choose one of: {', '.join(IMPLS)} (set --config.model.conv_impl)")
  # One CPU device only: over several (fake host devices, multi-process CPU runs) the batch-blocked loop
  # would run across the data-parallel sharding of the batch, which XLA cannot split.
  return impl == 'im2col' or (impl == 'auto' and jax.default_backend() == 'cpu' and jax.device_count() == 1)


def _block_size(batch: int, bytes_per_image: int, block_bytes: int) -> int:
  """The largest divisor of ``batch`` whose window matrix fits in ``block_bytes`` (at least 1)."""
  target = max(1, block_bytes // max(bytes_per_image, 1))
  return max(d for d in range(1, min(batch, target) + 1) if batch % d == 0)


def _windows(xp: jax.Array, k: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]) -> jax.Array:
  """[b, Hp, Wp, C] padded input -> [b*Ho*Wo, kh*kw*C], columns ordered (i, j, c) like an HWIO kernel."""
  (kh, kw), (sh, sw), (ho, wo) = k, stride, out_hw
  cols = [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] for i in range(kh) for j in range(kw)]
  return jnp.concatenate(cols, axis=-1).reshape(-1, kh * kw * xp.shape[-1])


def _kernel_grad(xp: jax.Array, g: jax.Array, kernel_shape, stride, block_bytes: int) -> jax.Array:
  """d loss / d kernel = sum over pixels of window^T @ output-gradient, accumulated block by block."""
  b, hp, wp, c = xp.shape
  kh, kw, _, o = kernel_shape
  ho, wo = g.shape[1:3]
  if kh == kw == 1:
    xs = xp[:, ::stride[0], ::stride[1], :][:, :ho, :wo]
    return lax.dot_general(xs.reshape(-1, c), g.reshape(-1, o), (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32).reshape(kernel_shape)
  bs = _block_size(b, ho * wo * kh * kw * c * xp.dtype.itemsize, block_bytes)

  def body(acc, blk):
    xb, gb = blk
    cols = _windows(xb, (kh, kw), stride, (ho, wo))
    return acc + lax.dot_general(cols, gb.reshape(-1, o), (((0,), (0,)), ((), ())),
                                 preferred_element_type=jnp.float32), None

  acc, _ = lax.scan(body, jnp.zeros((kh * kw * c, o), jnp.float32),
                    (xp.reshape(b // bs, bs, hp, wp, c), g.reshape(b // bs, bs, ho, wo, o)))
  return acc.reshape(kernel_shape)


def _lax_conv(x, w, stride, padding):
  return lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x: jax.Array, w: jax.Array, stride: tuple[int, int], padding: tuple[tuple[int, int], ...],
           block_bytes: int = _BLOCK_BYTES) -> jax.Array:
  """NHWC input, HWIO kernel, explicit ((lo, hi), (lo, hi)) padding: XLA's convolution, whose kernel
  gradient is computed by blocked im2col matrix products."""
  del block_bytes
  return _lax_conv(x, w, stride, padding)


def _fwd(x, w, stride, padding, block_bytes):
  return conv2d(x, w, stride, padding, block_bytes), (x, w)


def _bwd(stride, padding, block_bytes, res, g):
  x, w = res
  _, input_vjp = jax.vjp(lambda x_: _lax_conv(x_, w, stride, padding), x)  # XLA's transposed convolution
  dx, = input_vjp(g)
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  dw = _kernel_grad(xp, g, w.shape, stride, block_bytes).astype(w.dtype)
  return dx, dw


conv2d.defvjp(_fwd, _bwd)


def _explicit_padding(padding, x_shape, w_shape, strides) -> tuple[tuple[int, int], ...] | None:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding))
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  return pads if len(pads) == 2 else None


@functools.lru_cache(maxsize=None)  # one function per impl: nnx graphdefs of equal models compare equal
def make_conv_general_dilated(impl: str = 'auto'):
  """A drop-in for ``lax.conv_general_dilated`` (as ``nnx.Conv(conv_general_dilated=...)`` calls it) that
  takes the im2col path for 2-D NHWC/HWIO convolutions when ``impl`` asks for it, and ``lax`` otherwise."""
  fast = use_im2col(impl)

  def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
                           rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                           precision=None, preferred_element_type=None, **kwargs):
    strides = tuple(int(s) for s in window_strides)
    plain = (lhs.ndim == 4 and feature_group_count == 1 and preferred_element_type is None
             and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
             and dimension_numbers == _NHWC and not kwargs.get('out_sharding'))
    pads = _explicit_padding(padding, lhs.shape, rhs.shape, strides) if plain else None
    if fast and pads is not None and lhs.dtype == rhs.dtype:
      return conv2d(lhs, rhs, strides, pads)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision,
                                    preferred_element_type=preferred_element_type, **kwargs)

  return conv_general_dilated
