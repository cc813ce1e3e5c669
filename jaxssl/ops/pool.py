"""Max pooling whose gradient is a few strided elementwise passes instead of XLA's select-and-scatter.

Why. On the CPU, XLA differentiates ``reduce_window(max)`` into ``select_and_scatter``, which runs one window
at a time: CifarNet's two overlapping 3x3/2 pools took ~450 ms of backward for 19 ms of forward at batch 256
(28x28 input, 2-core machine), a third of the whole train step.

How. The forward is XLA's ``reduce_window``. The backward visits the k*k window offsets in row-major order;
at each, an input position is "the" maximum of an output window if it equals the window's max and no earlier
offset of that window was (so ties go to the first maximum, exactly like select-and-scatter). Its share of the
output gradient is added into one of the stride x stride phases of the input grid (shifted on the small output
grid), and the phases are interleaved into the input-sized gradient once. Every step is an elementwise op XLA
fuses. Gradients equal select-and-scatter's up to the order in which overlapping windows add (tests/test_ops.py).

'auto' takes this path on the CPU and XLA's own elsewhere, like the convolution in conv.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxssl.ops.conv import use_im2col


def _pads(padding, shape, window, strides) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(shape, window, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _reduce(x, window, strides, pads):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_2d(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
                pads: tuple[tuple[int, int], ...]) -> jax.Array:
  """NHWC max pooling with explicit ((lo, hi), (lo, hi)) padding (padded positions never win)."""
  return _reduce(x, window, strides, pads)


def _fwd(x, window, strides, pads):
  y = _reduce(x, window, strides, pads)
  return y, (x, y)


def _bwd(window, strides, pads, res, g):
  x, y = res
  (kh, kw), (sh, sw) = window, strides
  ho, wo = y.shape[1:3]
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  hp, wp = xp.shape[1:3]
  # Input row sh*a + i (window offset i = sh*qi + ri) lies in stride phase ri at phase row a + qi. Summing
  # each phase on the small output grid and interleaving the phases once writes the input-sized array once.
  ha, wa = -(-hp // sh), -(-wp // sw)
  zero = jnp.zeros((), g.dtype)
  phases = [[jnp.zeros((y.shape[0], ha, wa, y.shape[3]), g.dtype) for _ in range(sw)] for _ in range(sh)]
  taken = jnp.zeros(y.shape, bool)
  for i in range(kh):
    for j in range(kw):
      xs = xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
      first = (xs == y) & ~taken  # ties go to the first maximum in window order, as select-and-scatter does
      taken = taken | first
      share = jnp.where(first, g, zero)
      (qi, ri), (qj, rj) = divmod(i, sh), divmod(j, sw)
      phases[ri][rj] = phases[ri][rj] + lax.pad(share, zero, [(0, 0, 0), (qi, ha - ho - qi, 0),
                                                               (qj, wa - wo - qj, 0), (0, 0, 0)])
  grid = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [B, ha, sh, wa, sw, C]
  dxp = grid.reshape(y.shape[0], ha * sh, wa * sw, y.shape[3])
  (top, _), (left, _) = pads
  return (dxp[:, top:top + x.shape[1], left:left + x.shape[2], :],)


max_pool_2d.defvjp(_fwd, _bwd)


def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int], padding='VALID', *,
             impl: str = 'auto') -> jax.Array:
  """``nnx.max_pool`` for NHWC input, with the fast gradient when ``impl`` picks it (see conv.IMPLS)."""
  window, strides = tuple(window), tuple(strides)
  pads = _pads(padding, x.shape[1:3], window, strides)
  if use_im2col(impl):
    return max_pool_2d(x, window, strides, pads)
  return _reduce(x, window, strides, pads)
