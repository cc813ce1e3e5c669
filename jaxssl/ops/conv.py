"""2-D convolution computed as gathered-window (im2col) matrix products on the CPU, with a custom VJP.

Why. XLA's CPU convolutions (YNNPACK in jax 0.10) run the small nets jaxssl trains at a third to a half of this
CPU's matmul speed, and their kernel gradient (a convolution whose "kernel" is the whole output map) far slower:
on the 2-core machine jaxssl is developed on, CifarNet's 5x5, 64->64 layer on a rotation batch (1,024 14x14
maps) took ~800 ms forward, ~760 ms for the input gradient and ~2,600 ms for the kernel gradient, while XLA's
matmul of the same arithmetic, once the windows are laid out as a matrix, runs at ~130 GFLOP/s.

How. For each block of images (``lax.scan``), one gather lays the k*k shifted windows of the padded input out as
a [pixels, k*k*C] matrix (columns ordered (i, j, c), like an HWIO kernel), which one matmul contracts:
  - forward: windows @ kernel[k*k*C, O];
  - input gradient, stride 1: the forward convolution of the output gradient with the kernel flipped in space
    and transposed in channels (padding k-1-p), the same gathered path;
  - kernel gradient: output-gradient[pixels, O]^T @ windows, summed over the blocks, transposed once.
Blocks are sized so one block's window matrix stays in cache (``block_bytes``, 8 MiB): materializing the whole
batch's (1.3 GB for that layer) costs more than the arithmetic. One gather builds the windows 1.3-1.8x faster
than concatenating k*k strided slices. 1x1 convolutions are matmuls already and stay XLA's, except a strided
one's input gradient, which XLA computes as a convolution of the zero-dilated gradient: here one matmul spread
out by zeros (1.7x faster). A strided k x k layer's input gradient stays XLA's (its stride phases as one stride-1
convolution were no faster). ``python -m jaxssl.bench.ops`` times every pass of every CifarNet and ResNet-18
layer both ways, beside PyTorch's (README, "Speed"; docs/benchmarks.md).

Numerics are those of a float32 dot with float32 accumulation: values and gradients equal XLA's to float32
rounding (tests/test_ops.py). The step stays a pure, jittable function.

Which path runs. ``conv_general_dilated(..., path=...)`` takes this path ('im2col'), oneDNN's convolutions
('onednn', onednn.py; faster still) or XLA's own ('xla'); layers.Conv passes the path of the process's setting
(dispatch.py: 'auto' is oneDNN on one CPU device where it can be built, this path there where it cannot, XLA's
own elsewhere). Shapes neither covers (dilation, feature groups, layouts other than NHWC/HWIO) go to ``lax``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # what nnx.Conv passes for 2-D
BLOCK_BYTES = 8 << 20  # per block of images; 2-16 MiB measured on ResNet-18 and CifarNet shapes, 8 best overall


def _gathered(kernel_hw: tuple[int, int]) -> bool:
  """Whether a convolution (forward, or the input gradient seen as one) goes through window gathers: every
  kernel but 1x1, whose "windows" are the input itself (XLA's convolution is then a plain matmul)."""
  return tuple(kernel_hw) != (1, 1)


def block_size(batch: int, bytes_per_image: int, block_bytes: int) -> int:
  """The largest divisor of ``batch`` whose window matrix fits in ``block_bytes`` (at least 1)."""
  target = max(1, block_bytes // max(bytes_per_image, 1))
  return max(d for d in range(1, min(batch, target) + 1) if batch % d == 0)


def out_hw(padded_hw, k, stride) -> tuple[int, int]:
  return tuple((p - kk) // s + 1 for p, kk, s in zip(padded_hw, k, stride))


@functools.lru_cache(maxsize=256)
def _window_index(padded_hw, k, stride, conv_hw) -> np.ndarray:
  """Flat (row-major) positions in the padded map of every output pixel's k*k window, ordered (pixel, i, j)."""
  (wp,), (kh, kw), (sh, sw), (ho, wo) = padded_hw[1:], k, stride, conv_hw
  rows = (np.arange(ho)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None]) * wp
  cols = np.arange(wo)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :]
  return (rows + cols).reshape(-1).astype(np.int32)


def windows(xp: jax.Array, k: tuple[int, int], stride: tuple[int, int], conv_hw: tuple[int, int]) -> jax.Array:
  """[b, Hp, Wp, C] padded input -> [b*Ho*Wo, kh*kw*C], columns ordered (i, j, c) like an HWIO kernel."""
  b, hp, wp, c = xp.shape
  idx = _window_index((hp, wp), k, stride, conv_hw)
  flat = xp.reshape(b, hp * wp, c).at[:, idx].get(mode='promise_in_bounds', indices_are_sorted=False,
                                                   unique_indices=False)
  return flat.reshape(b * conv_hw[0] * conv_hw[1], k[0] * k[1] * c)


def dot(a, b, contract):
  return lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=jnp.float32)


def gathered_conv(x: jax.Array, w: jax.Array, stride, padding, block_bytes: int) -> jax.Array:
  """The convolution as, per block of images, one window gather and one matmul."""
  kh, kw, c, o = w.shape
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  b, hp, wp, _ = xp.shape
  ho, wo = out_hw((hp, wp), (kh, kw), stride)
  bs = block_size(b, ho * wo * kh * kw * c * xp.dtype.itemsize, block_bytes)
  wm = w.reshape(kh * kw * c, o)

  def body(_, xb):
    y = dot(windows(xb, (kh, kw), stride, (ho, wo)), wm, ((1,), (0,)))
    return None, y.astype(x.dtype).reshape(bs, ho, wo, o)

  _, y = lax.scan(body, None, xp.reshape(b // bs, bs, hp, wp, c))
  return y.reshape(b, ho, wo, o)


def kernel_grad(xp: jax.Array, g: jax.Array, kernel_shape, stride, block_bytes: int) -> jax.Array:
  """d loss / d kernel = sum over pixels of window^T @ output-gradient, accumulated block by block."""
  b, hp, wp, c = xp.shape
  kh, kw, _, o = kernel_shape
  ho, wo = g.shape[1:3]
  if kh == kw == 1:
    xs = xp[:, ::stride[0], ::stride[1], :][:, :ho, :wo]
    return dot(xs.reshape(-1, c), g.reshape(-1, o), ((0,), (0,))).reshape(kernel_shape)
  bs = block_size(b, ho * wo * kh * kw * c * xp.dtype.itemsize, block_bytes)

  # Accumulated as g^T @ windows, [O, k*k*C], transposed once at the end: 5-45% faster on this CPU than
  # windows^T @ g (CifarNet and ResNet-18 layers; the matmul reads the wide window matrix in its own layout).
  def body(acc, blk):
    xb, gb = blk
    return acc + dot(gb.reshape(-1, o), windows(xb, (kh, kw), stride, (ho, wo)), ((0,), (0,))), None

  acc, _ = lax.scan(body, jnp.zeros((o, kh * kw * c), jnp.float32),
                    (xp.reshape(b // bs, bs, hp, wp, c), g.reshape(b // bs, bs, ho, wo, o)))
  return acc.T.reshape(kernel_shape)


def lax_conv(x, w, stride, padding):
  return lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=NHWC)


def _forward(x, w, stride, padding, block_bytes):
  if _gathered(w.shape[:2]):
    return gathered_conv(x, w, stride, padding, block_bytes)
  return lax_conv(x, w, stride, padding)


def _strided_pointwise_input_grad(w, g, x_hw, stride, padding):
  """A strided 1x1 convolution's input gradient: every input position takes at most one output position's
  g @ w^T, so it is one matmul spread out by zeros (XLA convolves the zero-dilated g instead: ~1.7x slower)."""
  y = dot(g, w[0, 0], ((3,), (1,))).astype(g.dtype)
  pads = [(-lo, n - 1 - s * (m - 1) + lo, s - 1) for (lo, _), s, n, m in zip(padding, stride, x_hw, g.shape[1:3])]
  return lax.pad(y, jnp.zeros((), y.dtype), ((0, 0, 0), *pads, (0, 0, 0)))


def input_grad(x, w, g, stride, padding, block_bytes):
  """The convolution's gradient with respect to its input ``x``, given the output gradient ``g``."""
  kh, kw = w.shape[:2]
  if stride != (1, 1) and kh == kw == 1:
    return _strided_pointwise_input_grad(w, g, x.shape[1:3], stride, padding)
  flipped_pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kh, kw), padding))
  if stride == (1, 1) and _gathered((kh, kw)) and min(min(p) for p in flipped_pads) >= 0:
    # Stride 1: the input gradient is the forward convolution of g with the kernel flipped in space and
    # transposed in channels, padded k-1-p on each side.
    w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    return gathered_conv(g, w_t, (1, 1), flipped_pads, block_bytes)
  # Strided k x k: XLA's transposed convolution. Splitting it into its stride phases (one stride-1 convolution
  # with s*s*C outputs) was measured level with XLA's on ResNet-18's first downsampling layer and 1.4x slower on
  # its second, so it is not used.
  _, input_vjp = jax.vjp(lambda x_: lax_conv(x_, w, stride, padding), x)
  return input_vjp(g)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x: jax.Array, w: jax.Array, stride: tuple[int, int], padding: tuple[tuple[int, int], ...],
           block_bytes: int = BLOCK_BYTES) -> jax.Array:
  """NHWC input, HWIO kernel, explicit ((lo, hi), (lo, hi)) padding: gathered-window matrix products for k x k
  kernels, XLA's convolution (a matmul) for 1x1; the gradients as the module docstring says."""
  return _forward(x, w, stride, padding, block_bytes)


def _fwd(x, w, stride, padding, block_bytes):
  return conv2d(x, w, stride, padding, block_bytes), (x, w)


def conv_grads(x, w, g, stride, padding, *, backend: str, block_bytes: int = BLOCK_BYTES, need_dx: bool = True):
  """(input gradient or None, kernel gradient) of the convolution, by 'im2col' (this module's paths) or
  'onednn' (onednn.py); shared by both convolutions' VJPs and by conv_pool.py."""
  if backend == 'onednn':
    from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
    dx = onednn.conv_input_grad(g, w, x.shape, stride, padding) if need_dx else None
    return dx, onednn.conv_kernel_grad(x, g, w.shape, stride, padding)
  dx = input_grad(x, w, g, stride, padding, block_bytes).astype(x.dtype) if need_dx else None
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  return dx, kernel_grad(xp, g, w.shape, stride, block_bytes).astype(w.dtype)


def _bwd(stride, padding, block_bytes, res, g):
  x, w = res
  return conv_grads(x, w, g, stride, padding, backend='im2col', block_bytes=block_bytes)


conv2d.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def onednn_conv2d(x: jax.Array, w: jax.Array, stride: tuple[int, int],
                  padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """NHWC float32 input, HWIO kernel, explicit non-negative padding, through oneDNN: forward, input gradient
  (dropped by XLA where nothing uses it, as for a first layer) and kernel gradient."""
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  return onednn.conv_forward(x, w, stride, padding)


def _onednn_fwd(x, w, stride, padding):
  return onednn_conv2d(x, w, stride, padding), (x, w)


def _onednn_bwd(stride, padding, res, g):
  x, w = res
  return conv_grads(x, w, g, stride, padding, backend='onednn')


onednn_conv2d.defvjp(_onednn_fwd, _onednn_bwd)


def _explicit_padding(padding, x_shape, w_shape, strides) -> tuple[tuple[int, int], ...] | None:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding))
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  return pads if len(pads) == 2 else None


def _crop(x: jax.Array, pads) -> tuple[jax.Array, tuple[tuple[int, int], ...]]:
  """Negative (cropping) padding as a slice of the input and the non-negative rest: the same convolution. (XLA's
  CPU convolution with negative padding returned garbage in jax 0.10.2, forward and gradients alike.)"""
  if min(map(min, pads)) >= 0:
    return x, pads
  (t, b), (l, r) = pads
  x = x[:, max(-t, 0):x.shape[1] - max(-b, 0), max(-l, 0):x.shape[2] - max(-r, 0), :]
  return x, tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)


@functools.lru_cache(maxsize=None)
def onednn_takes(dtype) -> bool:
  """oneDNN's calls take float32, and bfloat16 where this CPU has oneDNN's fast bf16 kernels."""
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  return dtype == jnp.float32 or (dtype == jnp.bfloat16 and onednn.supports(jnp.bfloat16))


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None, out_sharding=None, *, path: str) -> jax.Array:
  """``lax.conv_general_dilated`` (same arguments) by ``path``: 'xla' (``lax``), 'im2col' (the gathered path)
  or 'onednn' (oneDNN for float32, and bfloat16 where the CPU has its bf16 kernels: other dtypes take the gathered
  path) for 2-D NHWC/HWIO convolutions, ``lax`` for everything else on every path."""
  strides = tuple(int(s) for s in window_strides)
  plain = (lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1 and preferred_element_type is None
           and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
           and dimension_numbers == NHWC and out_sharding is None)
  pads = _explicit_padding(padding, lhs.shape, rhs.shape, strides) if plain else None
  if path != 'xla' and pads is not None and lhs.dtype == rhs.dtype:
    lhs, pads = _crop(lhs, pads)
    if path == 'onednn' and onednn_takes(lhs.dtype):
      return onednn_conv2d(lhs, rhs, strides, pads)
    return conv2d(lhs, rhs, strides, pads)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                                  feature_group_count, batch_group_count, precision=precision,
                                  preferred_element_type=preferred_element_type, out_sharding=out_sharding)
