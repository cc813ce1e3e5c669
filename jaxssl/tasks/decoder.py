"""A decoder head for the dense pretext tasks (autoencoder, inpainting, colorization): one backbone feature back up
to an image of K channels.

The head reads one named backbone feature (``feature``; by default :func:`default_feature`: a middle feature map,
CifarNet ``pool2``, AlexNet ``conv5``, a ResNet's ``stage3``), sized by :func:`jaxssl.tasks.base.head_input`. A
spatial map [h, w, C] goes through a 3x3 convolution; a vector [D] (a fully connected layer) through a linear
layer to a small map. Then n stages of (nearest-neighbour 2x upsampling, 3x3 convolution, ReLU) bring it to about
the output size (n = log2 of the ratio, rounded), a last 3x3 convolution gives K channels, with no activation (the
task reads them as values or logits), and a bilinear resize makes the size exactly ``out_hw`` (before that
convolution where K is the larger: it costs in proportion to the channels it interpolates). Upsampling then
convolving avoids the checkerboard pattern strided transposed convolutions can leave (Odena et al. 2016). Widths
halve at every stage, from ``width`` down to ``min_width``. The last convolution's kernel starts at zero and its
bias at ``bias_init`` (the task's choice: the mean pixel), so the first output is the mean image and the first
loss the data's variance.

The head never changes the backbone, so a checkpoint of a dense task transfers like any other (init_from copies
the backbone; heads are never transferred).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.ops.layers import Conv
from jaxssl.tasks.base import head_input

# Features a decoder reads by default, in order of preference: the last feature map that still has some spatial
# detail (CifarNet pool2 is 7x7 on 28 px; AlexNet conv5 13x13 on 227 px; a ResNet's stage3 has stride 4 or 16).
DEFAULT_FEATURES = ('conv5', 'pool2', 'stage3')
VECTOR_START = 8   # a vector feature is first laid out as a map of at most this side


def default_feature(backbone) -> str:
  """The feature a decoder reads when a task names none: the first of :data:`DEFAULT_FEATURES` the backbone has,
  else its last feature map (what comes before global pooling), else its output."""
  names = tuple(backbone.feature_names)
  for name in DEFAULT_FEATURES:
    if name in names:
      return name
  return names[-2] if len(names) > 1 else backbone.output_name


def num_stages(size_in: int, size_out: int) -> int:
  """How many 2x upsampling stages take ``size_in`` nearest to ``size_out`` (the resize does the rest)."""
  return max(0, round(math.log2(max(size_out, 1) / max(size_in, 1))))


class DecoderHead(nnx.Module):
  """Backbone feature -> [B, out_h, out_w, K] (module docstring)."""

  def __init__(self, feature: str, feature_shape: Sequence[int], out_hw: tuple[int, int], out_channels: int, *,
               rngs: nnx.Rngs, width: int = 128, min_width: int = 32, bias_init: Sequence[float] | float = 0.0):
    self.feature = feature
    self.out_hw = (int(out_hw[0]), int(out_hw[1]))
    shape = tuple(int(s) for s in feature_shape)
    conv_kw = dict(padding='SAME', rngs=rngs)
    if len(shape) == 3:       # a map
      start, cin = shape[:2], shape[2]
      self.project = None
      self.entry = Conv(cin, width, (3, 3), **conv_kw)
    elif len(shape) == 1:     # a vector: a linear layer to a small map
      n = max(0, math.ceil(math.log2(max(self.out_hw) / VECTOR_START)))
      start = tuple(-(-s // 2 ** n) for s in self.out_hw)
      self.project = nnx.Linear(shape[0], start[0] * start[1] * width, rngs=rngs)
      self.entry = None
    else:
      raise ValueError(f"a decoder reads a feature map [h, w, C] or a vector [D]; feature '{feature}' has shape "
                       f'{shape}')
    self.start = (int(start[0]), int(start[1]))
    self.width = width
    stages = num_stages(min(self.start), min(self.out_hw))
    widths = [max(min_width, width // 2 ** (i + 1)) for i in range(stages)]
    self.ups = nnx.List([Conv(a, b, (3, 3), **conv_kw) for a, b in zip([width] + widths[:-1], widths)])
    last = widths[-1] if widths else width
    # The resize to out_hw is a dense interpolation: it runs on whichever side of the last convolution has fewer
    # channels (after it for images of 1-3 channels, before it for colorization's hundreds of classes).
    self.resize_last = out_channels < last
    bias = np.broadcast_to(np.asarray(bias_init, np.float32), (out_channels,))
    # Zero kernel: the first output is the bias everywhere (the task's mean image), as LinearHead starts at zero.
    self.out = Conv(last, out_channels, (3, 3), kernel_init=nnx.initializers.zeros_init(), **conv_kw)
    self.out.bias[...] = jnp.asarray(bias)

  def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
    h = features[self.feature].astype(jnp.float32)
    if self.project is not None:
      h = jax.nn.relu(self.project(h.reshape(h.shape[0], -1))).reshape(h.shape[0], *self.start, self.width)
    else:
      h = jax.nn.relu(self.entry(h))
    for conv in self.ups:
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      h = jax.nn.relu(conv(h))
    if self.resize_last:
      return self._resize(self.out(h))
    return self.out(self._resize(h))

  def _resize(self, h: jax.Array) -> jax.Array:
    if h.shape[1:3] == self.out_hw:
      return h
    return jax.image.resize(h, (h.shape[0], *self.out_hw, h.shape[3]), method='bilinear')


def make_decoder(task_name: str, backbone, backbone_input_shape, feature: str | None, out_hw, out_channels: int, *,
                 rngs: nnx.Rngs, width: int = 128, min_width: int = 32, bias_init=0.0) -> DecoderHead:
  """A :class:`DecoderHead` on ``feature`` ('' or None: :func:`default_feature`) of ``backbone`` fed
  ``backbone_input_shape``; a feature the backbone lacks, or an input it cannot take, is one clear error."""
  feature = feature or default_feature(backbone)
  feature, _, shape = head_input(backbone, backbone_input_shape, feature, task_name)
  return DecoderHead(feature, shape, out_hw, out_channels, rngs=rngs, width=width, min_width=min_width,
                     bias_init=bias_init)


def check_width(task_name: str, width: int, min_width: int) -> None:
  if int(width) < 1 or int(min_width) < 1:
    raise ValueError(f"task '{task_name}': decoder_width={width} and decoder_min_width={min_width} must be >= 1")


def psnr(mse: jax.Array, peak: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB of a mean squared error on values of range ``peak`` (capped at 100 dB for
  a perfect reconstruction)."""
  return jnp.minimum(10.0 * jnp.log10(peak ** 2 / jnp.maximum(mse, 1e-10)), 100.0)
