"""ResNets (v1.5: stride on the 3x3 conv) in CIFAR and ImageNet flavours."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.ops.layers import Conv, batch_norm_act, max_pool

# He-normal over fan_out, as torchvision does: keeps gradient variance stable through
# the deep ReLU stacks (BN follows every conv so the forward scale is normalised anyway).
_CONV_INIT = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _conv(cin, cout, k, stride, *, dtype, rngs):
  # Symmetric k//2 padding (not 'SAME') so stride-2 layers match torchvision exactly;
  # no bias because the following BatchNorm has its own shift.
  p = k // 2
  return Conv(cin, cout, (k, k), strides=stride, padding=((p, p), (p, p)),
              use_bias=False, kernel_init=_CONV_INIT, dtype=dtype, rngs=rngs)


def _bn(c, *, dtype, rngs, zero_scale=False):
  # zero_scale on the last BN of a residual branch makes every block start as the
  # identity, so the deep net initially behaves like a shallow one and trains stably
  # at large batch / learning rate (Goyal et al. 2017, "Accurate, large minibatch SGD").
  return nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs,
                       scale_init=nnx.initializers.zeros_init() if zero_scale
                       else nnx.initializers.ones_init())


class _Shortcut(nnx.Module):
  """Projection (1x1 conv + BN) used when the block changes shape."""

  def __init__(self, cin, cout, stride, *, dtype, rngs):
    self.conv = _conv(cin, cout, 1, stride, dtype=dtype, rngs=rngs)
    self.bn = _bn(cout, dtype=dtype, rngs=rngs)

  def __call__(self, x, train):
    return batch_norm_act(self.bn, self.conv(x), use_running_average=not train)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions (the first strided) and the shortcut: ResNet-18 and the CIFAR ResNets."""

  expansion = 1

  def __init__(self, cin, c, stride, *, dtype, rngs):
    cout = c * self.expansion
    self.conv1 = _conv(cin, c, 3, stride, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(c, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(c, cout, 3, 1, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(cout, dtype=dtype, rngs=rngs, zero_scale=True)
    self.shortcut = (_Shortcut(cin, cout, stride, dtype=dtype, rngs=rngs)
                     if stride != 1 or cin != cout else None)

  def __call__(self, x, train):
    h = batch_norm_act(self.bn1, self.conv1(x), use_running_average=not train, act='relu')
    h = batch_norm_act(self.bn2, self.conv2(h), use_running_average=not train)
    s = x if self.shortcut is None else self.shortcut(x, train)
    return jax.nn.relu(h + s)


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided: v1.5), 1x1 expand to 4x the width, and the shortcut: ResNet-50."""

  expansion = 4

  def __init__(self, cin, c, stride, *, dtype, rngs):
    cout = c * self.expansion
    self.conv1 = _conv(cin, c, 1, 1, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(c, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(c, c, 3, stride, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(c, dtype=dtype, rngs=rngs)
    self.conv3 = _conv(c, cout, 1, 1, dtype=dtype, rngs=rngs)
    self.bn3 = _bn(cout, dtype=dtype, rngs=rngs, zero_scale=True)
    self.shortcut = (_Shortcut(cin, cout, stride, dtype=dtype, rngs=rngs)
                     if stride != 1 or cin != cout else None)

  def __call__(self, x, train):
    h = batch_norm_act(self.bn1, self.conv1(x), use_running_average=not train, act='relu')
    h = batch_norm_act(self.bn2, self.conv2(h), use_running_average=not train, act='relu')
    h = batch_norm_act(self.bn3, self.conv3(h), use_running_average=not train)
    s = x if self.shortcut is None else self.shortcut(x, train)
    return jax.nn.relu(h + s)


class ResNet(nnx.Module):
  """Generic ResNet backbone; use the named constructors below.

  imagenet_stem=True: 7x7/2 conv + 3x3/2 maxpool (224 px inputs).
  imagenet_stem=False: one 3x3/1 conv, no pooling (28-32 px inputs).
  """
  output_name = 'pool'

  def __init__(self, *, input_shape: tuple[int, int, int], rngs: nnx.Rngs,
               block: type = BasicBlock, stage_sizes: Sequence[int] = (2, 2, 2, 2),
               stage_widths: Sequence[int] = (64, 128, 256, 512),
               imagenet_stem: bool = True, width: float = 1.0, dtype=jnp.float32):
    if width <= 0:
      raise ValueError(f'width must be > 0, got {width}')
    widths = [max(1, int(round(w * width))) for w in stage_widths]
    dtype = jnp.dtype(dtype)  # configs may give a name such as 'bfloat16'
    kw = dict(dtype=dtype, rngs=rngs)
    self.dtype = dtype
    self.imagenet_stem = imagenet_stem
    self.feature_names = ('stem', *[f'stage{i + 1}' for i in range(len(widths))], 'pool')
    cin = input_shape[-1]
    self.stem_conv = _conv(cin, widths[0], 7 if imagenet_stem else 3, 2 if imagenet_stem else 1, **kw)
    self.stem_bn = _bn(widths[0], **kw)
    cin = widths[0]
    stages = []
    for i, (n, c) in enumerate(zip(stage_sizes, widths)):
      blocks = []
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(block(cin, c, stride, **kw))
        cin = c * block.expansion
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.num_features = cin

  def __call__(self, x: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> dict[str, jax.Array]:
    del rng  # no stochastic layers; accepted for a uniform backbone interface
    f = {}
    h = x.astype(self.dtype)
    h = batch_norm_act(self.stem_bn, self.stem_conv(h), use_running_average=not train, act='relu')
    if self.imagenet_stem:
      # Pad with -inf (what max_pool's explicit padding does) == torchvision's padding=1.
      h = max_pool(h, (3, 3), (2, 2), ((1, 1), (1, 1)))
    f['stem'] = h
    for i, stage in enumerate(self.stages):
      for blk in stage:
        h = blk(h, train)
      f[f'stage{i + 1}'] = h
    f['pool'] = jnp.mean(h, axis=(1, 2))
    return f


def resnet20(*, input_shape, rngs, width=1.0, dtype=jnp.float32):
  """He et al. 2016 CIFAR ResNet-20 (projection rather than zero-pad shortcuts)."""
  return ResNet(input_shape=input_shape, rngs=rngs, block=BasicBlock, stage_sizes=(3, 3, 3),
                stage_widths=(16, 32, 64), imagenet_stem=False, width=width, dtype=dtype)


def resnet18_cifar(*, input_shape, rngs, width=1.0, dtype=jnp.float32):
  return ResNet(input_shape=input_shape, rngs=rngs, block=BasicBlock, stage_sizes=(2, 2, 2, 2),
                imagenet_stem=False, width=width, dtype=dtype)


def resnet18(*, input_shape, rngs, width=1.0, dtype=jnp.float32):
  return ResNet(input_shape=input_shape, rngs=rngs, block=BasicBlock, stage_sizes=(2, 2, 2, 2),
                imagenet_stem=True, width=width, dtype=dtype)


def resnet50(*, input_shape, rngs, width=1.0, dtype=jnp.float32):
  return ResNet(input_shape=input_shape, rngs=rngs, block=Bottleneck, stage_sizes=(3, 4, 6, 3),
                imagenet_stem=True, width=width, dtype=dtype)
