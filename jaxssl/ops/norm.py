"""Training-mode batch norm (+ ReLU) through oneDNN on the CPU.

Why. In a ResNet-18 train step on the 2-core CPU, XLA's fusions for batch norm (statistics, normalization and
their gradients) took ~0.5 s of ~4 s once the convolutions ran on oneDNN (onednn.py); on the 14x14x128 and
7x7x256 layers XLA's forward + backward took 2.4x PyTorch's time. oneDNN's batch-norm primitive makes one pass
for the statistics and one to normalize, and fuses the ReLU after it (keeping a 1-bit mask for the backward).

``onednn_batch_norm_act(bn, x, act)`` applies an ``nnx.BatchNorm`` in training mode (its parameters, statistics
and running averages as flax keeps them, so checkpoints do not change), then the ReLU if ``act='relu'``, where
``onednn_eligible`` says oneDNN's primitive applies: the batch statistics are wanted (training), the data are
float32 (or bfloat16 in a bfloat16 module, where oneDNN has bf16 kernels for this CPU) and the norm is the plain
per-channel one over all other axes (no ``axis_name`` / mask). layers.batch_norm_act takes it there when the
process's setting runs oneDNN (dispatch.py: 'auto' on one CPU device with oneDNN built), and is exactly flax's
``relu(bn(x))`` everywhere else. oneDNN 3.2 has no CPU kernel for its residual fusion (``fuse_norm_add_relu``),
so a ResNet block's addition and ReLU stay an XLA fusion after oneDNN's normalization.

Numerics. oneDNN computes the variance in two passes (flax's default: E[x^2] - E[x]^2), so outputs agree to
float32 rounding (bfloat16: one rounding of the output), not bit for bit (tests/test_ops.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

ACTS = ('none', 'relu')


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _onednn_bn(x, scale, shift, eps: float, fuse: str):
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  y, mean, var, _ = onednn.bn_forward(x, scale, shift, eps=eps, fuse=fuse)
  return y, mean, var


def _fwd(x, scale, shift, eps, fuse):
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  y, mean, var, ws = onednn.bn_forward(x, scale, shift, eps=eps, fuse=fuse)
  return (y, mean, var), (x, scale, mean, var, ws)


def _bwd(eps, fuse, res, cotangents):
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  x, scale, mean, var, ws = res
  g = cotangents[0]  # mean and variance leave only through stop_gradient (running averages)
  dx, dscale, dshift = onednn.bn_backward(x, g, scale, mean, var, ws, eps=eps, fuse=fuse)
  return dx, dscale, dshift


_onednn_bn.defvjp(_fwd, _bwd)


def onednn_eligible(bn: nnx.BatchNorm, x: jax.Array, use_running_average: bool) -> bool:
  """Whether oneDNN's primitive computes ``bn(x)`` here (``onednn_batch_norm_act``); oneDNN must be available."""
  axis = bn.axis if isinstance(bn.axis, int) else None
  # flax's output dtype: the module's dtype, else float32 parameters promote the input to float32.
  types_ok = ((x.dtype == jnp.float32 and bn.dtype in (None, jnp.float32))
              or (x.dtype == jnp.bfloat16 and bn.dtype == jnp.bfloat16))
  if not (not use_running_average and types_ok
          and x.ndim >= 2 and axis in (-1, x.ndim - 1) and bn.axis_name is None and bn.use_scale and bn.use_bias
          and bn.scale[...].dtype == jnp.float32 and bn.bias[...].dtype == jnp.float32):
    return False
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  workspace, kernel = onednn.bn_plan(x.size // x.shape[-1], x.shape[-1], 'relu', x.dtype)
  return workspace >= 0 and not kernel.startswith('ref')  # oneDNN's reference loops would be slower than XLA


def onednn_batch_norm_act(bn: nnx.BatchNorm, x: jax.Array, act: str) -> jax.Array:
  """``act(bn(x))`` in training mode through oneDNN, with ``bn``'s running averages updated as flax does; only
  where ``onednn_eligible``."""
  if act not in ACTS:
    raise ValueError(f"act must be one of {', '.join(ACTS)}, not {act!r}")
  y, mean, var = _onednn_bn(x, bn.scale[...], bn.bias[...], float(bn.epsilon), act)
  m = bn.momentum
  bn.mean[...] = m * bn.mean[...] + (1 - m) * jax.lax.stop_gradient(mean)
  bn.var[...] = m * bn.var[...] + (1 - m) * jax.lax.stop_gradient(var)
  return y
