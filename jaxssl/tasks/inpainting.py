"""Inpainting, the context encoder (Pathak et al., CVPR 2016): a region of every image is removed in the grain
pipeline and the decoder head (jaxssl/tasks/decoder.py) paints it back from what the backbone saw of the rest.

Masks (``mask``):

* ``center``: one centred rectangle, ``mask_size`` of the image's height and width (0.5: a quarter of the area,
  the paper's central region);
* ``blocks``: ``num_blocks`` squares of side ``mask_size`` x the shorter side, each at a uniformly random position
  (per image), overlaps allowed (the paper's random blocks).

Removed pixels are replaced by ``fill`` before the backbone sees anything: ``mean`` (the dataset's mean colour, as
the paper fills), ``zero`` or ``noise`` (uniform random values, drawn per pixel whatever the mask). The replacement
happens on the uint8 batch in the pipeline, so the backbone never receives the removed values: the input depends
on the mask, the fill and the pixels outside the mask only (tests/test_dense_pretext.py changes the removed pixels
and checks that the backbone's input stays identical).

Loss: the L2 (or per-pixel BCE, ``reconstruction_loss``) between the decoder's output and the original pixels,
averaged over the masked pixels of each image, plus ``context_weight`` times the same over the rest (default 0:
the paper's reconstruction loss counts only the missing region). Metrics over the masked pixels, per image then
averaged: ``mse``, ``psnr``, and ``fill_mse`` / ``fill_psnr``: what the fill itself scores there (the floor a
useful model must beat).

Batch: ``image`` uint8 [B, H, W, C] (masked and filled), ``target`` uint8 [B, H, W, C] (the original), ``mask``
uint8 [B, H, W, 1] (1 = removed), ``weight`` f32 [B].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.tasks.autoencoder import Reconstruction, per_image_mse, unit
from jaxssl.tasks.base import Batch, check_choice, weighted_mean
from jaxssl.tasks.decoder import psnr

MASKS = ('center', 'blocks')
FILLS = ('mean', 'zero', 'noise')


def block_side(size: int, fraction: float) -> int:
  return min(size, max(1, round(fraction * size)))


def center_mask(batch: int, h: int, w: int, fraction: float) -> np.ndarray:
  """bool [B, H, W]: a centred rectangle of ``fraction`` of each side."""
  mh, mw = block_side(h, fraction), block_side(w, fraction)
  mask = np.zeros((h, w), bool)
  mask[(h - mh) // 2:(h - mh) // 2 + mh, (w - mw) // 2:(w - mw) // 2 + mw] = True
  return np.broadcast_to(mask, (batch, h, w))


def block_mask(rng: np.random.Generator, batch: int, h: int, w: int, fraction: float, num_blocks: int) -> np.ndarray:
  """bool [B, H, W]: the union of ``num_blocks`` squares of side ``fraction`` x min(H, W) at random positions."""
  s = block_side(min(h, w), fraction)
  top = rng.integers(0, h - s + 1, size=(batch, num_blocks))
  left = rng.integers(0, w - s + 1, size=(batch, num_blocks))
  rows = (np.arange(h) >= top[..., None]) & (np.arange(h) < top[..., None] + s)      # [B, n, H]
  cols = (np.arange(w) >= left[..., None]) & (np.arange(w) < left[..., None] + s)    # [B, n, W]
  return np.any(rows[..., :, None] & cols[..., None, :], axis=1)


@dataclasses.dataclass
class Inpainting(Reconstruction):
  """Paint back a removed region from its context (module docstring)."""
  name: str = 'inpainting'
  mask: str = 'center'            # 'center' | 'blocks'
  mask_size: float = 0.5          # side of the centred rectangle / of each block, as a fraction of the image side
  num_blocks: int = 3             # mask='blocks': how many squares
  fill: str = 'mean'              # 'mean' | 'zero' | 'noise': what replaces the removed pixels
  context_weight: float = 0.0     # weight of the loss on the pixels outside the mask (the paper: 0)

  def __post_init__(self):
    super().__post_init__()
    check_choice(self.name, 'mask', self.mask, MASKS)
    check_choice(self.name, 'fill', self.fill, FILLS)
    if not 0 < float(self.mask_size) <= 1:
      raise ValueError(f"task '{self.name}': mask_size={self.mask_size} must be in (0, 1] (a fraction of the side)")
    if int(self.num_blocks) < 1 or float(self.context_weight) < 0 or np.isnan(float(self.context_weight)):
      raise ValueError(f"task '{self.name}': num_blocks={self.num_blocks} must be >= 1 and "
                       f'context_weight={self.context_weight} >= 0')

  def make_mask(self, shape, rng: np.random.Generator) -> np.ndarray:
    """bool [B, H, W] of the pixels to remove, for images of ``shape`` [B, H, W, C]."""
    b, h, w = shape[:3]
    if self.mask == 'center':
      return center_mask(b, h, w, float(self.mask_size))
    return block_mask(rng, b, h, w, float(self.mask_size), int(self.num_blocks))

  def fill_values(self, shape, rng: np.random.Generator) -> np.ndarray:
    """What the removed pixels become: uint8, broadcastable to ``shape`` [B, H, W, C]."""
    if self.fill == 'noise':
      return rng.integers(0, 256, size=tuple(shape), dtype=np.uint8)
    if self.fill == 'zero':
      return np.zeros((shape[-1],), np.uint8)
    return np.round(255.0 * self._mean_pixel(shape[-1])).astype(np.uint8)

  def corrupt(self, images: np.ndarray, rng: np.random.Generator) -> Batch:
    mask = self.make_mask(images.shape, rng)[..., None]                    # [B, H, W, 1]
    filled = np.where(mask, self.fill_values(images.shape, rng), images)   # the removed values never pass
    return {'image': filled.astype(np.uint8), 'mask': mask.astype(np.uint8)}

  def loss(self, outputs: jax.Array, batch: Batch):
    target, weight = unit(batch['target']), batch['weight']
    mask = batch['mask'].astype(jnp.float32)
    per_pixel = jnp.mean(self.pixel_loss(outputs, target), axis=-1, keepdims=True)    # [B, H, W, 1]
    inside = jnp.sum(per_pixel * mask, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(mask, axis=(1, 2, 3)), 1.0)
    per_example = inside
    if float(self.context_weight):
      rest = 1.0 - mask
      outside = jnp.sum(per_pixel * rest, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(rest, axis=(1, 2, 3)), 1.0)
      per_example = inside + float(self.context_weight) * outside
    loss = weighted_mean(per_example, weight)
    mse = per_image_mse(self.reconstruct(outputs), target, mask)
    fill = per_image_mse(unit(batch['image']), target, mask)
    return loss, {'loss': loss, 'mse': weighted_mean(mse, weight), 'psnr': weighted_mean(psnr(mse), weight),
                  'fill_mse': weighted_mean(fill, weight), 'fill_psnr': weighted_mean(psnr(fill), weight)}

  def pictures(self, out: dict[str, np.ndarray], batch: Batch) -> dict[str, np.ndarray]:
    """The masked input, the original, the decoder's output, and the input with the output pasted in the hole."""
    shown = super().pictures(out, batch)
    mask = batch['mask'].astype(bool)
    return {**shown, 'pasted': np.where(mask, out['output'], shown['input'])}
