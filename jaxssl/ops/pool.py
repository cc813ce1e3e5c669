"""Max pooling whose gradient is a few strided elementwise passes instead of XLA's select-and-scatter.

Why. On the CPU, XLA differentiates ``reduce_window(max)`` into ``select_and_scatter``, which runs one window
at a time: CifarNet's two overlapping 3x3/2 pools took ~450 ms of backward for 19 ms of forward at batch 256
(28x28 input, 2-core machine), a third of the whole train step.

How. Differentiated, the forward takes the max over the k*k strided window slices and keeps, per pooled value,
the row-major offset of its first maximum (int8; ties go to the first maximum, as in select-and-scatter); the
backward, for each offset, selects the output gradient where that offset won and adds it into one of the
stride x stride phases of the input grid (shifted on the small output grid), and interleaves the phases into
the input-sized gradient once. Every step is an elementwise op XLA fuses, and the input is not kept for the
backward. Without a gradient (evaluation) the forward is XLA's ``reduce_window``. Gradients equal
select-and-scatter's up to the order in which overlapping windows add (tests/test_ops.py). Measured: a 3x3/2
pool of [1024, 28, 28, 64], forward + backward, 251 ms comparing against the input, 205 ms from the offsets.

layers.max_pool takes this path wherever the process's setting runs one of the CPU paths (dispatch.py: 'auto' on
one CPU device) and XLA's own elsewhere.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from jaxssl.ops.conv import out_hw


def explicit_pads(padding, shape, window, strides) -> tuple[tuple[int, int], ...]:
  """'SAME' / 'VALID' / explicit pairs as explicit ((lo, hi), (lo, hi)) padding of a map of spatial ``shape``."""
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(shape, window, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def reduce_max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
                    pads: tuple[tuple[int, int], ...]) -> jax.Array:
  """XLA's own NHWC max pool (differentiated into select-and-scatter), padding never winning."""
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


def pool_with_offsets(y, window, strides, pads, pooled_hw):
  """Max pool and the window offset (row-major, int8) of each maximum, the first one where a window ties;
  padding never wins."""
  yp = jnp.pad(y, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  (ho, wo), (sh, sw) = pooled_hw, strides
  best = idx = None
  for k, (i, j) in enumerate(itertools.product(range(window[0]), range(window[1]))):
    s = yp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
    if best is None:
      best, idx = s, jnp.zeros(s.shape, jnp.int8)
    else:
      later = s > best  # strictly greater: ties keep the earlier offset
      best, idx = jnp.where(later, s, best), jnp.where(later, jnp.int8(k), idx)
  return best, idx


def unpool(gp, idx, window, strides, pads, in_hw):
  """The pool's gradient from ``pool_with_offsets``'s offsets: each pooled gradient added back at its maximum's
  position, as stride x stride phases of the padded input (each a sum of shifted selects on the small grid),
  interleaved once and cropped to ``in_hw``."""
  (sh, sw), (ho, wo) = strides, gp.shape[1:3]
  hp, wp = in_hw[0] + sum(pads[0]), in_hw[1] + sum(pads[1])
  ha, wa = -(-hp // sh), -(-wp // sw)
  zero = jnp.zeros((), gp.dtype)
  phases = [[None] * sw for _ in range(sh)]
  for k, (i, j) in enumerate(itertools.product(range(window[0]), range(window[1]))):
    (qi, ri), (qj, rj) = divmod(i, sh), divmod(j, sw)
    share = lax.pad(jnp.where(idx == k, gp, zero), zero,
                    ((0, 0, 0), (qi, ha - ho - qi, 0), (qj, wa - wo - qj, 0), (0, 0, 0)))
    phases[ri][rj] = share if phases[ri][rj] is None else phases[ri][rj] + share
  b, c = gp.shape[0], gp.shape[3]
  phases = [[p if p is not None else jnp.zeros((b, ha, wa, c), gp.dtype) for p in row] for row in phases]
  grid = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [b, ha, sh, wa, sw, C]
  full = grid.reshape(b, ha * sh, wa * sw, c)
  (top, _), (left, _) = pads
  return full[:, top:top + in_hw[0], left:left + in_hw[1], :]


def max_pool_2d(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
                pads: tuple[tuple[int, int], ...]) -> jax.Array:
  """NHWC max pooling with explicit ((lo, hi), (lo, hi)) padding (padded positions never win), its gradient from
  the stored window offsets (module docstring)."""
  return _max_pool_2d(x, tuple(window), tuple(strides), tuple(map(tuple, pads)), tuple(x.shape[1:3]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool_2d(x, window, strides, pads, in_hw):
  del in_hw
  return reduce_max_pool(x, window, strides, pads)  # no gradient wanted: XLA's reduce_window, the fastest forward


def _fwd(x, window, strides, pads, in_hw):
  padded_hw = tuple(n + lo + hi for n, (lo, hi) in zip(in_hw, pads))
  return pool_with_offsets(x, window, strides, pads, out_hw(padded_hw, window, strides))


def _bwd(window, strides, pads, in_hw, offsets, g):
  return (unpool(g, offsets, window, strides, pads, in_hw),)


_max_pool_2d.defvjp(_fwd, _bwd)
