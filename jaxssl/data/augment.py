"""Seeded augmentations applied to whole uint8 batches with vectorized numpy (no per-image Python loop)."""

from __future__ import annotations

import numpy as np


def random_crop(images: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
  """Zero-pads each side by ``padding`` and takes a random crop of the original size from every image."""
  if padding <= 0:
    return images
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  dy = rng.integers(0, 2 * padding + 1, size=b)
  dx = rng.integers(0, 2 * padding + 1, size=b)
  rows = dy[:, None] + np.arange(h)[None, :]          # [B, H]
  cols = dx[:, None] + np.arange(w)[None, :]          # [B, W]
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images: np.ndarray, rng: np.random.Generator, prob: float = 0.5) -> np.ndarray:
  """Mirrors a random subset of images left-right."""
  flip = rng.random(images.shape[0]) < prob
  out = images.copy()
  out[flip] = out[flip, :, ::-1]
  return out
