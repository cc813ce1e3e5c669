"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012), the backbone of the DeepFashion seed experiments.

One tower with the paper's widths (96-256-384-384-256 convolutions, two 4096-wide fully connected layers; no
channel groups: they only split the net over two 2012 GPUs), 227x227 input: conv1 11x11/4 gives 55x55, three
3x3/2 max pools give 27, 13 and 6. As in torchvision, pool5 is average-pooled to 6x6 before fc6 whatever the
input size, so fc6 has the same shape at every resolution: a backbone pretrained on 256 px images or on 72 px
jigsaw tiles loads into a 227 px model, and tests can run the real architecture on small images. The
smallest input that reaches pool5 is 67 px.

``arch``: 'paper' (the default, above) or 'torchvision': torchvision's AlexNet ("One weird trick", Krizhevsky
2014), widths 64-192-384-256-256 and conv1 padded by 2 (224 px gives 55x55 as 227 px does unpadded), the rest as
here; it takes torchvision's ImageNet weights (jaxssl/models/torchvision_weights.py) and inputs of 63 px and up.

``norm``: 'none' (torchvision's AlexNet has none), 'lrn' (the paper's local response normalization after conv1
and conv2: k=2, n=5, alpha=1e-4, beta=0.75) or 'batch' (BatchNorm after every convolution, as self-supervised
AlexNets commonly use so that training from scratch needs no careful initialization). Dropout (default 0.5)
precedes fc6 and fc7, as in the paper and torchvision.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.ops.layers import Conv, batch_norm_act, conv_relu_max_pool, max_pool

NORMS = ('none', 'lrn', 'batch')
# arch -> (convolution widths, conv1's padding): the paper's one tower, or torchvision's AlexNet.
ARCHS = {'paper': ((96, 256, 384, 384, 256), 0), 'torchvision': ((64, 192, 384, 256, 256), 2)}
POOL5_SIZE = 6
_KERNEL_INIT = nnx.initializers.he_normal()
_BIAS_INIT = nnx.initializers.zeros_init()


def local_response_norm(x: jax.Array, size: int = 5, k: float = 2.0, alpha: float = 1e-4,
                        beta: float = 0.75) -> jax.Array:
  """b_c = a_c / (k + alpha * sum of a^2 over the ``size`` channels centred on c)^beta (the paper's eq.)."""
  sq = jnp.square(x.astype(jnp.float32))
  half = size // 2
  sq = jnp.pad(sq, [(0, 0)] * (x.ndim - 1) + [(half, size - 1 - half)])
  window = sum(sq[..., i:i + x.shape[-1]] for i in range(size))
  return (x / jnp.power(k + alpha * window, beta)).astype(x.dtype)


def adaptive_avg_pool(h: jax.Array, size: int) -> jax.Array:
  """[B, H, W, C] -> [B, size, size, C], bin i spanning floor(i*H/size) .. ceil((i+1)*H/size) (torchvision's
  AdaptiveAvgPool2d); the identity when H = W = size."""

  def pool_axis(x, axis):
    n = x.shape[axis]
    if n == size:
      return x
    bins = [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]
    return jnp.concatenate([jax.lax.slice_in_dim(x, a, b, axis=axis).mean(axis=axis, keepdims=True)
                            for a, b in bins], axis=axis)

  return pool_axis(pool_axis(h, 1), 2)


def _out(n: int, k: int, s: int) -> int:
  return (n - k) // s + 1


class AlexNet(nnx.Module):
  """One-tower AlexNet (module docstring); every stage's output is a feature, fc7 the representation the heads
  read (``output_name``)."""

  feature_names = ('conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool5', 'fc6', 'fc7')
  output_name = 'fc7'

  def __init__(self, *, input_shape: tuple[int, int, int], rngs: nnx.Rngs, dropout: float = 0.5,
               norm: str = 'none', fc_width: int = 4096, width: float = 1.0, arch: str = 'paper',
               dtype=jnp.float32):
    """``width`` scales the convolution channels and ``fc_width`` the fully connected layers (small variants
    for quick runs and tests; 1.0 and 4096 are the paper's); ``arch`` picks the paper's or torchvision's
    widths (module docstring)."""
    if norm not in NORMS:
      raise ValueError(f"AlexNet: unknown norm '{norm}'; choose one of: {', '.join(NORMS)} "
                       '(set --config.model.options.norm)')
    if arch not in ARCHS:
      raise ValueError(f"AlexNet: unknown arch '{arch}'; choose one of: {', '.join(ARCHS)} "
                       '(set --config.model.options.arch)')
    widths, pad = ARCHS[arch]
    h, w, c = input_shape
    p5 = [_out(_out(_out(_out(n + 2 * pad, 11, 4), 3, 2), 3, 2), 3, 2) for n in (h, w)]
    if min(p5) < 1:
      smallest = 67 - 2 * pad  # the smallest input whose pool5 is 1x1
      raise ValueError(f'AlexNet(arch={arch}) needs inputs of at least {smallest}x{smallest} pixels, got {h}x{w}; '
                       'raise data.image_size (or the task crop_size)')
    dtype = jnp.dtype(dtype)
    ch = [max(1, round(k * width)) for k in widths]
    kw = dict(dtype=dtype, kernel_init=_KERNEL_INIT, bias_init=_BIAS_INIT, rngs=rngs)
    self.dtype, self.norm, self.dropout_rate, self.arch = dtype, norm, float(dropout), arch
    self.conv1 = Conv(c, ch[0], (11, 11), strides=(4, 4), padding=((pad, pad), (pad, pad)) if pad else 'VALID',
                      **kw)
    self.conv2 = Conv(ch[0], ch[1], (5, 5), padding=((2, 2), (2, 2)), **kw)
    self.conv3 = Conv(ch[1], ch[2], (3, 3), padding=((1, 1), (1, 1)), **kw)
    self.conv4 = Conv(ch[2], ch[3], (3, 3), padding=((1, 1), (1, 1)), **kw)
    self.conv5 = Conv(ch[3], ch[4], (3, 3), padding=((1, 1), (1, 1)), **kw)
    if norm == 'batch':
      self.bns = nnx.List([nnx.BatchNorm(k, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs) for k in ch])
    self.fc6 = nnx.Linear(POOL5_SIZE * POOL5_SIZE * ch[4], fc_width, **kw)
    self.fc7 = nnx.Linear(fc_width, fc_width, **kw)
    self.drop = nnx.Dropout(self.dropout_rate)

  def _conv(self, i: int, conv: Conv, h: jax.Array, train: bool) -> jax.Array:
    if self.norm == 'batch':
      return batch_norm_act(self.bns[i], conv(h), use_running_average=not train, act='relu')
    h = jax.nn.relu(conv(h))
    return local_response_norm(h) if self.norm == 'lrn' and i < 2 else h

  def _conv_pool(self, i: int, conv: Conv, h: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """Conv ``i``'s output and its 3x3/2 pool (overlapping pooling, the paper's), as one stage where nothing
    comes between the ReLU and the pool."""
    if self.norm == 'none' or (self.norm == 'lrn' and i >= 2):
      return conv_relu_max_pool(conv, h, (3, 3), (2, 2), 'VALID')
    h = self._conv(i, conv, h, train)
    return h, max_pool(h, (3, 3), (2, 2), 'VALID')

  def __call__(self, x: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> dict[str, jax.Array]:
    if train and self.dropout_rate > 0 and rng is None:
      raise ValueError('AlexNet(dropout>0) in train mode needs rng=<PRNG key>')
    rngs = (None, None) if rng is None else tuple(jax.random.split(rng))
    f = {}
    h = x.astype(self.dtype)
    f['conv1'], f['pool1'] = self._conv_pool(0, self.conv1, h, train)
    f['conv2'], f['pool2'] = self._conv_pool(1, self.conv2, f['pool1'], train)
    f['conv3'] = h = self._conv(2, self.conv3, f['pool2'], train)
    f['conv4'] = h = self._conv(3, self.conv4, h, train)
    f['conv5'], f['pool5'] = self._conv_pool(4, self.conv5, h, train)
    h = adaptive_avg_pool(f['pool5'], POOL5_SIZE).reshape(x.shape[0], -1)
    h = self.drop(h, deterministic=not train, rngs=rngs[0])
    f['fc6'] = h = jax.nn.relu(self.fc6(h))
    h = self.drop(h, deterministic=not train, rngs=rngs[1])
    f['fc7'] = jax.nn.relu(self.fc7(h))
    return f
