"""Which implementation jaxssl's layers (layers.py) run: one setting for the process, read when a layer is traced.

Why one setting. How a convolution runs (oneDNN's custom calls, the gathered-window matmuls of conv.py, XLA's
own) changes the speed of a step, not what it computes, so it belongs to the run, not to the model: a backbone is
written with plain layers, and its parameters and checkpoints are the same whichever path runs.

Why a jit-keyed context. The layers read the setting while jax traces them, so a function traced under one
setting must not be reused under another. ``jax.make_user_context`` makes the setting part of every jit cache key:
a jitted function called after ``set_impl`` (or inside ``use_impl``) with another value is traced again.

Values (``IMPLS``): 'auto' (the default) takes oneDNN's convolutions on a single CPU device where they can be
built, the gathered-window matmuls there where they cannot, and XLA's own elsewhere; 'xla', 'im2col' and
'onednn' force one (``cpu_path``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

IMPLS = ('auto', 'xla', 'im2col', 'onednn')

_SETTING = jax.make_user_context('auto')


def check_impl(impl: str) -> str:
  """``impl`` if it names an implementation, else a one-line error listing the choices."""
  if impl not in IMPLS:
    raise ValueError(f"unknown conv impl '{impl}'; choose one of: {', '.join(IMPLS)} (set --config.model.conv_impl)")
  return impl


def set_impl(impl: str) -> None:
  """Makes ``impl`` the process's setting (every thread; ``use_impl`` overrides it within a block).

  Only the name is checked here: whether oneDNN can be built, or which backend 'auto' resolves to, is decided when
  a layer is traced, so that calling this does not start jax's backends (before ``jax.distributed.initialize``,
  say) or compile the oneDNN library.
  """
  _SETTING.set_global(check_impl(impl))


@contextlib.contextmanager
def use_impl(impl: str) -> Iterator[None]:
  """The setting ``impl`` inside the block, in this thread; the previous one after it."""
  with _SETTING(check_impl(impl)):
    yield


def current_impl() -> str:
  return _SETTING.value


def cpu_path(impl: str | None = None) -> str:
  """What ``impl`` (default: the current setting) runs here: 'xla' (XLA's own convolutions), 'im2col' (the
  gathered-window matmuls of conv.py) or 'onednn' (oneDNN's convolutions as custom calls, onednn.py).

  'auto' takes oneDNN on a single CPU device when it can be built, the gathered path there when it cannot, and
  XLA's own everywhere else: on GPU and TPU XLA's convolutions (cuDNN, the MXU) are the right choice, and over
  several CPU devices (fake host devices, multi-process CPU runs) the batch-blocked loop and the custom calls
  would run across the data-parallel sharding of the batch, which XLA cannot split.
  """
  impl = check_impl(current_impl() if impl is None else impl)
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  if impl == 'onednn':
    if not onednn.available():
      raise ValueError(f'conv_impl=onednn: {onednn.unavailable_reason()}; or set --config.model.conv_impl=im2col')
    return 'onednn'
  if impl == 'auto':
    if jax.default_backend() != 'cpu' or jax.device_count() != 1:
      return 'xla'
    return 'onednn' if onednn.available() else 'im2col'
  return impl


def describe_path(impl: str | None = None) -> str:
  """One log line: which convolutions ``impl`` (default: the current setting) runs here, and on the CPU why not
  oneDNN's where 'auto' could not build them."""
  impl = current_impl() if impl is None else impl
  path = cpu_path(impl)
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  what = {'xla': "XLA's own", 'im2col': 'gathered-window matmuls', 'onednn': "oneDNN's (custom calls)"}[path]
  line = f'convolutions: {what} (conv_impl={impl})'
  if path == 'onednn':
    bf16 = ('float32 and bfloat16' if onednn.supports(jax.numpy.bfloat16)
            else 'float32; bfloat16 takes the gathered path (oneDNN has no bf16 kernels for this CPU)')
    line += f', with training BatchNorm; {bf16}'
  if impl == 'auto' and path == 'im2col':
    line += f'; oneDNN unavailable: {onednn.unavailable_reason()}'
  return line
