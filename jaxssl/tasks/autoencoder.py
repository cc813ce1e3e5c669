"""Autoencoder and denoising autoencoder: the backbone encodes an image, a decoder head (jaxssl/tasks/decoder.py)
rebuilds the clean image from one backbone feature.

Denoising (Vincent et al. 2008/2010) corrupts the input in the grain pipeline, independently for every image and
pixel, and the target stays the clean image. ``noise`` picks the corruption, ``noise_level`` its strength:

* ``gaussian``: additive N(0, level^2) noise on pixel values in [0, 1] (every channel), clipped to [0, 1];
* ``masking``: each pixel (all its channels) set to 0 with probability ``level`` (Vincent's masking noise);
* ``salt_pepper``: each pixel (all its channels) set to black or white, one or the other with equal chance,
  with probability ``level``.

The noisy image stays uint8 (what the network sees is exactly what the pictures show), and so does the target; both
become floats on the device. ``noise='none'`` is the plain autoencoder. The corruption is part of the task, so
evaluation corrupts too (from its seeded generator: every evaluation sees the same noisy images).

Loss: ``reconstruction_loss='mse'`` (the decoder's output read as pixel values in [0, 1]) or ``'bce'`` (read as
logits, per-pixel binary cross-entropy against the target's values in [0, 1] as soft labels: the classic MNIST
autoencoder loss). Metrics, per image then averaged: ``mse`` (of the reconstruction clipped to [0, 1]; the
reconstruction error whichever loss trains) and ``psnr`` (10 log10(1 / mse), dB); denoising also reports
``noisy_psnr``, the PSNR of the noisy input itself (what doing nothing scores).

Batch: ``image`` uint8 [B, H, W, C] (what the backbone sees), ``target`` uint8 [B, H, W, C], ``weight`` f32 [B].
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxssl.data import augment
from jaxssl.tasks.base import Batch, Task, check_choice, normalize, weighted_mean
from jaxssl.tasks.decoder import check_width, make_decoder, psnr

LOSSES = ('mse', 'bce')
NOISES = ('none', 'gaussian', 'masking', 'salt_pepper')
DEFAULT_NOISE_LEVEL = {'none': 0.0, 'gaussian': 0.2, 'masking': 0.25, 'salt_pepper': 0.1}


def add_noise(images: np.ndarray, rng: np.random.Generator, kind: str, level: float) -> np.ndarray:
  """``images`` uint8 [B, H, W, C] corrupted by ``kind`` noise of strength ``level`` (module docstring); every draw
  is per image and pixel."""
  if kind == 'none':
    return images
  b, h, w, c = images.shape
  if kind == 'gaussian':
    noise = rng.normal(0.0, 255.0 * level, size=(b, h, w, c))
    return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)
  hit = rng.random(size=(b, h, w, 1)) < level
  if kind == 'masking':
    return np.where(hit, np.uint8(0), images)
  if kind == 'salt_pepper':
    salt = rng.random(size=(b, h, w, 1)) < 0.5
    return np.where(hit, np.where(salt, np.uint8(255), np.uint8(0)), images)
  raise ValueError(f"unknown noise '{kind}'; choose one of: {', '.join(NOISES)}")


def per_image_mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean squared error per image of [B, H, W, C] arrays, over the pixels of ``mask`` [B, H, W, 1] (all where
  None)."""
  se = jnp.square(pred - target)
  if mask is None:
    return jnp.mean(se, axis=(1, 2, 3))
  mask = jnp.broadcast_to(mask, se.shape)
  return jnp.sum(se * mask, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(mask, axis=(1, 2, 3)), 1.0)


def unit(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


@dataclasses.dataclass
class Reconstruction(Task):
  """What the pixel-reconstruction tasks share: the decoder head on one backbone feature, the pixel loss, the
  augmentation of the clean image and the pictures. Subclasses make the input (:meth:`corrupt`) and may weight
  pixels (:meth:`loss`)."""
  draws_pictures: ClassVar[bool] = True
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'reconstruction'
  feature: str | None = None            # the feature the decoder reads; None/'': decoder.default_feature
  reconstruction_loss: str = 'mse'      # 'mse' (output = pixel values) or 'bce' (output = per-pixel logits)
  decoder_width: int = 128              # channels after the decoder's entry; halved at every 2x upsampling
  decoder_min_width: int = 32
  crop_padding: int = 0                 # train only: random crop with zero padding, before corrupting
  flip: bool = False                    # train only: random horizontal flip, before corrupting

  def __post_init__(self):
    check_choice(self.name, 'reconstruction_loss', self.reconstruction_loss, LOSSES)
    check_width(self.name, self.decoder_width, self.decoder_min_width)
    if int(self.crop_padding) < 0:
      raise ValueError(f"task '{self.name}': crop_padding={self.crop_padding} must be >= 0")

  # ----------------------------------------------------------------------------------------- pipeline

  def corrupt(self, images: np.ndarray, rng: np.random.Generator) -> Batch:
    """The input the backbone sees (``image``) and anything the loss needs beside the clean ``target``."""
    raise NotImplementedError

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    images = batch['image']
    if train:
      images = augment.random_crop(images, rng, int(self.crop_padding))
      if self.flip:
        images = augment.random_flip(images, rng)
    return {**self.corrupt(images, rng), 'target': images, 'weight': np.asarray(batch['weight'], np.float32)}

  # ---------------------------------------------------------------------------------------------- model

  def _mean_pixel(self, channels: int) -> np.ndarray:
    return np.clip(np.broadcast_to(np.asarray(self.mean, np.float32), (channels,)), 1e-3, 1 - 1e-3)

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    h, w, c = input_shape
    mean = self._mean_pixel(c)
    bias = mean if self.reconstruction_loss == 'mse' else np.log(mean / (1 - mean))   # the mean image first
    return make_decoder(self.name, backbone, input_shape, self.feature, (h, w), c, rngs=rngs,
                        width=int(self.decoder_width), min_width=int(self.decoder_min_width), bias_init=bias)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    return head(backbone(normalize(batch['image'], self.mean, self.std), train=train, rng=rng))

  def reconstruct(self, outputs: jax.Array) -> jax.Array:
    """The decoder's output as an image in [0, 1]."""
    return jax.nn.sigmoid(outputs) if self.reconstruction_loss == 'bce' else jnp.clip(outputs, 0.0, 1.0)

  def pixel_loss(self, outputs: jax.Array, target: jax.Array) -> jax.Array:
    """[B, H, W, C] loss per pixel and channel (``target`` in [0, 1])."""
    if self.reconstruction_loss == 'bce':
      return optax.sigmoid_binary_cross_entropy(outputs, target)
    return jnp.square(outputs - target)

  def loss(self, outputs: jax.Array, batch: Batch):
    target, weight = unit(batch['target']), batch['weight']
    loss = weighted_mean(jnp.mean(self.pixel_loss(outputs, target), axis=(1, 2, 3)), weight)
    mse = per_image_mse(self.reconstruct(outputs), target)
    metrics = {'loss': loss, 'mse': weighted_mean(mse, weight), 'psnr': weighted_mean(psnr(mse), weight)}
    return loss, metrics

  # ------------------------------------------------------------------------------------------- pictures

  def evaluators(self) -> tuple[str, ...]:
    return ('reconstructions',)

  def picture_outputs(self, outputs, batch: Batch) -> dict[str, jax.Array]:
    """Per-example arrays the pictures need, computed on the device (jaxssl/eval/reconstructions.py)."""
    del batch
    return {'output': self.reconstruct(outputs)}

  def pictures(self, out: dict[str, np.ndarray], batch: Batch) -> dict[str, np.ndarray]:
    """Columns of the picture grid, each [N, H, W, C] in [0, 1]: the input as the network saw it, the target, the
    output."""
    return {'input': batch['image'] / 255.0, 'target': batch['target'] / 255.0, 'output': out['output']}


@dataclasses.dataclass
class Autoencoder(Reconstruction):
  """Rebuild the clean image from a (possibly corrupted) input: the (denoising) autoencoder."""
  name: str = 'autoencoder'
  noise: str = 'none'                   # 'none' | 'gaussian' | 'masking' | 'salt_pepper'
  noise_level: float | None = None      # None: DEFAULT_NOISE_LEVEL of the noise

  def __post_init__(self):
    super().__post_init__()
    check_choice(self.name, 'noise', self.noise, NOISES)
    if self.noise_level is None:
      self.noise_level = DEFAULT_NOISE_LEVEL[self.noise]
    level = float(self.noise_level)
    if level < 0 or np.isnan(level) or (self.noise != 'gaussian' and level > 1):
      raise ValueError(f"task '{self.name}': noise_level={self.noise_level} must be >= 0 (and <= 1 for "
                       f"'{self.noise}', a probability)")
    self.noise_level = level

  def corrupt(self, images: np.ndarray, rng: np.random.Generator) -> Batch:
    return {'image': add_noise(images, rng, self.noise, self.noise_level)}

  def loss(self, outputs: jax.Array, batch: Batch):
    loss, metrics = super().loss(outputs, batch)
    if self.noise != 'none':
      noisy = per_image_mse(unit(batch['image']), unit(batch['target']))
      metrics['noisy_psnr'] = weighted_mean(psnr(noisy), batch['weight'])
    return loss, metrics
