"""Layers that pick their implementation from one process-wide setting (layers.py, dispatch.py), and the CPU
kernels behind them: custom operations with hand-written gradients (see conv.py for why) and oneDNN's calls.

A run sets the implementation once, ``jaxssl.ops.set_impl(config.model.conv_impl)`` (or for a block,
``with jaxssl.ops.use_impl(...)``), and logs ``jaxssl.ops.describe_path()``; backbones use ``jaxssl.ops.layers``.
"""

from jaxssl.ops.dispatch import IMPLS, check_impl, cpu_path, current_impl, describe_path, set_impl, use_impl

__all__ = ['IMPLS', 'check_impl', 'cpu_path', 'current_impl', 'describe_path', 'set_impl', 'use_impl']
