"""The layers jaxssl's backbones are written with. Each picks its implementation itself, when it is traced, from the
process's setting (dispatch.py: ``set_impl`` / ``use_impl``), so a backbone knows nothing of kernels:

- ``Conv``: an ``nnx.Conv`` (the same parameters, shapes, dtypes and initialization: checkpoints load either way)
  whose 2-D NHWC convolutions take the setting's path (conv.py; oneDNN's through onednn.py).
- ``conv_relu_max_pool(conv, x, window, strides, padding)``: ``relu(conv(x))`` and its max pool, the pool from
  one fused loop on the CPU paths (conv_pool.py), which never writes the full-resolution map.
- ``max_pool``: ``nnx.max_pool`` for NHWC input, its gradient from stored window offsets on the CPU paths (pool.py).
- ``batch_norm_act(bn, x, use_running_average=..., act=...)``: ``act(bn(x))``, one oneDNN pass in training where the
  setting runs oneDNN (norm.py).

On the 'xla' path (by default: off the CPU, or over several CPU devices) each is exactly flax's own layer.

Graphdefs. ``Conv`` holds one module-level function as its ``conv_general_dilated`` (nnx keeps it as a static
attribute of the graphdef), so the graphdefs of two equal models compare and hash equal and nnx's jit caches hit;
the setting is not in the graphdef but in jit's cache key (dispatch.py), so a trace never outlives its setting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.ops import conv as conv_ops
from jaxssl.ops import conv_pool, norm, pool
from jaxssl.ops.dispatch import cpu_path


def conv_general_dilated(*args, **kwargs) -> jax.Array:
  """``lax.conv_general_dilated`` (same arguments) on the path of the current setting."""
  return conv_ops.conv_general_dilated(*args, path=cpu_path(), **kwargs)


class Conv(nnx.Conv):
  """``nnx.Conv`` (same arguments but ``conv_general_dilated``) on the path of the current setting."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, conv_general_dilated=conv_general_dilated, **kwargs)


def _pair(v) -> tuple[int, int]:
  return (int(v), int(v)) if isinstance(v, int) else tuple(int(a) for a in v)


def max_pool(x: jax.Array, window, strides, padding='VALID') -> jax.Array:
  """``nnx.max_pool(x, window, strides, padding)`` for NHWC ``x`` (padded positions never win); ``window`` and
  ``strides`` as ints or pairs."""
  window, strides = _pair(window), _pair(strides)
  pads = pool.explicit_pads(padding, x.shape[1:3], window, strides)
  if cpu_path() != 'xla':
    return pool.max_pool_2d(x, window, strides, pads)
  return pool.reduce_max_pool(x, window, strides, pads)


def _plain_2d(conv: nnx.Conv, x: jax.Array) -> bool:
  """Whether ``conv`` is a 2-D convolution of NHWC ``x`` without dilation, groups, mask or output type."""
  dilated = any(d is not None and _pair(d) != (1, 1) for d in (conv.input_dilation, conv.kernel_dilation))
  return (len(conv.kernel_size) == 2 and x.ndim == 4 and conv.feature_group_count == 1 and conv.mask is None
          and conv.preferred_element_type is None and not dilated)


def _conv_pads(conv: nnx.Conv, in_hw, stride) -> tuple[tuple[int, int], ...] | None:
  """nnx.Conv's padding (a lax padding name, an int or one per axis, (lo, hi) pairs) as explicit pairs; None for
  nnx's own 'CIRCULAR', 'REFLECT' and 'CAUSAL'."""
  if isinstance(conv.padding, str):
    if conv.padding not in ('SAME', 'SAME_LOWER', 'VALID'):
      return None
    return pool.explicit_pads(conv.padding, in_hw, tuple(conv.kernel_size), stride)
  per_axis = (conv.padding,) * 2 if isinstance(conv.padding, int) else tuple(conv.padding)
  return tuple((int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in per_axis)


def _fused_stage(conv: nnx.Conv, x: jax.Array, window, strides, padding):
  """(conv stride, conv padding, pool padding), explicit, where the fused loop covers the stage; else None (not
  2-D, dilated, grouped, masked, cropping, nnx's own padding modes)."""
  if not _plain_2d(conv, x):
    return None
  stride = _pair(conv.strides if conv.strides is not None else 1)
  pads = _conv_pads(conv, x.shape[1:3], stride)
  if pads is None or len(pads) != 2:
    return None
  conv_hw = conv_ops.out_hw(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[1:3], pads)), tuple(conv.kernel_size),
                            stride)
  pool_pads = pool.explicit_pads(padding, conv_hw, window, strides)
  return None if min(map(min, (*pads, *pool_pads))) < 0 else (stride, pads, pool_pads)


def conv_relu_max_pool(conv: nnx.Conv, x: jax.Array, window, strides,
                       padding='VALID') -> tuple[jax.Array, jax.Array]:
  """``(h, max_pool(h, window, strides, padding))`` with ``h = relu(conv(x))``, for an ``nnx.Conv`` on NHWC ``x``.

  On the CPU paths the pool comes from one fused loop straight from ``x`` (conv_pool.py: the same values, the
  layer's own dtype promotion; oneDNN's convolution inside it where the setting runs oneDNN), and ``h`` only
  feeds what uses it: XLA drops it from a step that needs the pool alone. Convolutions the loop does not cover
  (not 2-D, dilated, grouped, masked, cropping) and the 'xla' path pool ``h`` itself.
  """
  h = jax.nn.relu(conv(x))
  window, strides = _pair(window), _pair(strides)
  path = cpu_path()
  fused = None if path == 'xla' else _fused_stage(conv, x, window, strides, padding)
  if fused is None:
    return h, max_pool(h, window, strides, padding)
  stride, pads, pool_pads = fused
  kernel = conv.kernel[...]
  bias = conv.bias[...] if conv.bias is not None else jnp.zeros((kernel.shape[-1],), kernel.dtype)
  x, kernel, bias = conv.promote_dtype((x, kernel, bias), dtype=conv.dtype)
  return h, conv_pool.conv_pool_relu(x, kernel, bias, stride, pads, window, strides, pool_pads,
                                     backend='onednn' if path == 'onednn' else 'im2col')


def batch_norm_act(bn: nnx.BatchNorm, x: jax.Array, *, use_running_average: bool, act: str = 'none') -> jax.Array:
  """``act(bn(x))`` (``act`` in norm.ACTS), with ``bn``'s running averages updated as flax does when training."""
  if act not in norm.ACTS:
    raise ValueError(f"act must be one of {', '.join(norm.ACTS)}, not {act!r}")
  if cpu_path() == 'onednn' and norm.onednn_eligible(bn, x, use_running_average):
    return norm.onednn_batch_norm_act(bn, x, act)
  y = bn(x, use_running_average=use_running_average)
  return jax.nn.relu(y) if act == 'relu' else y
