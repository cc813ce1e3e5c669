"""CifarNet: the small conv net of TF-slim / the TF CIFAR-10 tutorial (without LRN)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.ops.layers import Conv, conv_relu_max_pool

# TF-slim used truncated normals with hand-picked stddevs (5e-2 convs, 4e-2 fc) tuned for
# 32x32x3 input. He-normal (fan-in, truncated) gives the same scale regime for ReLU nets
# but adapts to any input shape / channel count, so 28x28x1 works unchanged.
_KERNEL_INIT = nnx.initializers.he_normal()
_BIAS_INIT = nnx.initializers.zeros_init()


def _halve(n: int) -> int:
  return -(-n // 2)  # ceil(n / 2): output size of a SAME stride-2 op


def _conv_relu_pool(conv: Conv, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """relu(conv(x)) and its overlapping 3x3/2 max pool (as in the original cifar10 tutorial)."""
  return conv_relu_max_pool(conv, x, (3, 3), (2, 2), 'SAME')


class CifarNet(nnx.Module):
  """Two conv-ReLU-pool stages and two fully connected layers; every stage's output is a feature, fc2 the
  representation the heads read (``output_name``)."""

  feature_names = ('conv1', 'pool1', 'conv2', 'pool2', 'fc1', 'fc2')
  output_name = 'fc2'

  def __init__(self, *, input_shape: tuple[int, int, int], rngs: nnx.Rngs,
               dropout: float = 0.0, dtype=jnp.float32):
    h, w, c = input_shape
    dtype = jnp.dtype(dtype)  # configs may give a name such as 'bfloat16'
    kw = dict(dtype=dtype, kernel_init=_KERNEL_INIT, bias_init=_BIAS_INIT, rngs=rngs)
    self.dtype = dtype
    self.dropout_rate = float(dropout)
    self.conv1 = Conv(c, 64, (5, 5), padding='SAME', **kw)
    self.conv2 = Conv(64, 64, (5, 5), padding='SAME', **kw)
    # Two SAME stride-2 pools: 28 -> 7, 32 -> 8.
    flat = _halve(_halve(h)) * _halve(_halve(w)) * 64
    self.fc1 = nnx.Linear(flat, 384, **kw)
    self.fc2 = nnx.Linear(384, 192, **kw)
    self.drop = nnx.Dropout(self.dropout_rate)

  def __call__(self, x: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> dict[str, jax.Array]:
    if train and self.dropout_rate > 0 and rng is None:
      raise ValueError('CifarNet(dropout>0) in train mode needs rng=<PRNG key>')
    f = {}
    x = x.astype(self.dtype)
    f['conv1'], f['pool1'] = _conv_relu_pool(self.conv1, x)
    f['conv2'], f['pool2'] = _conv_relu_pool(self.conv2, f['pool1'])
    h = f['pool2'].reshape(x.shape[0], -1)
    f['fc1'] = h = jax.nn.relu(self.fc1(h))
    h = self.drop(h, deterministic=not train, rngs=rng)
    f['fc2'] = jax.nn.relu(self.fc2(h))
    return f
