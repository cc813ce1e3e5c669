"""Random views of whole uint8 batches for instance discrimination (SimCLR, BYOL), in vectorized numpy.

A view is SimCLR's chain (Chen et al. 2020, appendix A): a random resized crop, a left-right flip, colour
jitter (brightness, contrast, saturation, hue, applied in a random order per image), a random grayscale, a
Gaussian blur, and BYOL's solarization (Grill et al. 2020). Images with one channel get intensity jitter only
(brightness and contrast); saturation, hue and grayscale need colour. Every stage is optional through its
:class:`ViewAugment` field.

It runs in the grain pipeline on the whole batch at once: each stage is a few numpy operations over all images,
no Python loop over images, and every random draw is per row (its size starts with the batch size), as
jaxssl/data/pipeline.py's RowGenerator requires, so a process holding some rows of a global batch gives those
rows exactly the views one process would. Resizing is bilinear without antialiasing: the crops are mostly
enlarged, and a crop that shrinks the image much aliases a little (torchvision's tensors did the same before
0.17).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

# ITU-R 601 luma weights: torchvision's rgb_to_grayscale, also what saturation blends towards.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane.
_TO_YIQ = np.asarray([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_FROM_YIQ = np.linalg.inv(_TO_YIQ).astype(np.float32)
_JITTERS = ('brightness', 'contrast', 'saturation', 'hue')


@dataclasses.dataclass(frozen=True)
class ViewAugment:
  """How one view is drawn. Probabilities are per image; 0 turns a stage off (its draws are still made, so the
  other stages' draws do not move)."""
  size: int = 0                                   # output side in pixels (square); 0 = the input's height
  scale: tuple[float, float] = (0.08, 1.0)        # crop area as a fraction of the image's
  ratio: tuple[float, float] = (3 / 4, 4 / 3)     # crop aspect ratio (width / height), drawn log-uniformly
  flip: float = 0.5
  jitter: float = 0.8                             # probability of the colour (intensity) jitter
  brightness: float = 0.4                         # factors drawn from [1 - x, 1 + x]
  contrast: float = 0.4
  saturation: float = 0.4                         # colour only
  hue: float = 0.1                                # colour only: a shift in [-x, x] of a full turn
  grayscale: float = 0.2                          # colour only
  blur: float = 0.0
  blur_sigma: tuple[float, float] = (0.1, 2.0)    # in output pixels (SimCLR's range, for 224 px views)
  solarize: float = 0.0

  def check(self, what: str) -> None:
    """Rejects values no image can be drawn with, as one line naming ``what`` (the task's option)."""
    lo, hi = self.scale
    if not 0 < lo <= hi <= 1:
      raise ValueError(f'{what}: crop scale {self.scale} must satisfy 0 < min <= max <= 1')
    if not 0 < self.ratio[0] <= self.ratio[1]:
      raise ValueError(f'{what}: crop ratio {self.ratio} must satisfy 0 < min <= max')
    for name in ('flip', 'jitter', 'grayscale', 'blur', 'solarize'):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f'{what}: {name} is a probability, got {getattr(self, name)}')
    if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.hue <= 0.5:
      raise ValueError(f'{what}: jitter strengths must be >= 0 and hue in [0, 0.5]')
    if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
      raise ValueError(f'{what}: blur_sigma {self.blur_sigma} must satisfy 0 < min <= max')
    if self.size < 0:
      raise ValueError(f'{what}: size must be >= 0 (0: the image size), got {self.size}')


def make_views(images: np.ndarray, rng, augments: Sequence[ViewAugment]) -> np.ndarray:
  """uint8 [B, H, W, C] -> uint8 [B, V, S, S, C]: view ``v`` of every image drawn with ``augments[v]``."""
  return np.stack([random_view(images, rng, a) for a in augments], axis=1)


def random_view(images: np.ndarray, rng, aug: ViewAugment) -> np.ndarray:
  """One random view of every image (uint8 [B, H, W, C] -> uint8 [B, S, S, C])."""
  b, h, w, c = images.shape
  size = aug.size or h
  x = resized_crop(images, crop_boxes(rng, b, (h, w), aug.scale, aug.ratio), size)
  flip = rng.random(b) < aug.flip
  x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
  x = color_jitter(x, rng, aug)
  gray = rng.random(b) < aug.grayscale
  if c == 3:
    x = np.where(gray[:, None, None, None], _luma(x), x)
  blur, sigma = rng.random(b) < aug.blur, rng.uniform(*aug.blur_sigma, size=b)
  if blur.any():
    x[blur] = gaussian_blur(x[blur], sigma[blur], max_sigma=aug.blur_sigma[1])
  solarize = rng.random(b) < aug.solarize
  x = np.where(solarize[:, None, None, None] & (x >= 0.5), 1.0 - x, x)
  return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ geometry


def crop_boxes(rng, b: int, hw: tuple[int, int], scale, ratio, attempts: int = 10) -> np.ndarray:
  """Integer boxes ``(y0, x0, h, w)`` [B, 4] of torchvision's RandomResizedCrop: up to ``attempts`` tries of a
  random area fraction and log-uniform aspect ratio each, the first that fits; else the whole image cut to the
  ratio range, centred. All tries are drawn at once, per row."""
  height, width = hw
  area = height * width * rng.uniform(scale[0], scale[1], size=(b, attempts))
  aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(b, attempts)))
  cw = np.rint(np.sqrt(area * aspect)).astype(np.int64)
  ch = np.rint(np.sqrt(area / aspect)).astype(np.int64)
  fits = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
  first = np.argmax(fits, axis=1)
  rows = np.arange(b)
  cw, ch = cw[rows, first], ch[rows, first]
  # The fallback: the largest centred crop within the ratio range.
  in_ratio = width / height
  fw, fh = (width, int(round(width / ratio[0]))) if in_ratio < ratio[0] else (
      (int(round(height * ratio[1])), height) if in_ratio > ratio[1] else (width, height))
  found = fits.any(axis=1)
  cw, ch = np.where(found, cw, fw), np.where(found, ch, fh)
  offset = rng.random((b, 2))
  y0 = np.where(found, np.floor(offset[:, 0] * (height - ch + 1)), (height - ch) // 2).astype(np.int64)
  x0 = np.where(found, np.floor(offset[:, 1] * (width - cw + 1)), (width - cw) // 2).astype(np.int64)
  return np.stack([y0, x0, ch, cw], axis=1)


def resized_crop(images: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  """Each image's box ``(y0, x0, h, w)`` resized to ``size`` x ``size``, bilinear (half-pixel centres, edges
  clamped): float32 in [0, 1], [B, size, size, C]. A box of the output's size gives its pixels exactly."""
  b, height, width, _ = images.shape
  boxes = np.asarray(boxes, np.float64)

  def taps(start, length, limit):
    pos = start[:, None] + (np.arange(size) + 0.5) * (length[:, None] / size) - 0.5     # [B, size]
    pos = np.clip(pos, 0.0, limit - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, limit - 1), (pos - lo).astype(np.float32)

  y_lo, y_hi, wy = taps(boxes[:, 0], boxes[:, 2], height)
  x_lo, x_hi, wx = taps(boxes[:, 1], boxes[:, 3], width)
  n = np.arange(b)[:, None, None]
  x = images.astype(np.float32) * np.float32(1 / 255)

  def row(y):
    left, right = x[n, y[:, :, None], x_lo[:, None, :]], x[n, y[:, :, None], x_hi[:, None, :]]
    return left + (right - left) * wx[:, None, :, None]

  top, bottom = row(y_lo), row(y_hi)
  return top + (bottom - top) * wy[:, :, None, None]


# -------------------------------------------------------------------------------------------- colour


def _luma(x: np.ndarray) -> np.ndarray:
  """[B, H, W, C] -> [B, H, W, 1]: the grey level (the image itself if it has one channel)."""
  return x if x.shape[-1] == 1 else (x @ _LUMA)[..., None]


def color_jitter(x: np.ndarray, rng, aug: ViewAugment) -> np.ndarray:
  """Brightness, contrast, saturation and hue (the last two for colour only), each with its own random factor,
  in a random order per image, on ``aug.jitter`` of the images; values stay in [0, 1] after every step."""
  b = x.shape[0]
  apply = rng.random(b) < aug.jitter
  factors = {name: np.where(apply, rng.uniform(max(0.0, 1 - s), 1 + s, size=b), 1.0)
             for name, s in (('brightness', aug.brightness), ('contrast', aug.contrast),
                             ('saturation', aug.saturation))}
  factors['hue'] = np.where(apply, rng.uniform(-aug.hue, aug.hue, size=b), 0.0)
  order = np.argsort(rng.random((b, len(_JITTERS))), axis=1)      # a random permutation per row
  names = _JITTERS if x.shape[-1] == 3 else _JITTERS[:2]
  x = x.copy()
  for position in range(len(_JITTERS)):
    for k, name in enumerate(_JITTERS):
      rows = apply & (order[:, position] == k)
      if name in names and rows.any():
        x[rows] = _ADJUST[name](x[rows], factors[name][rows].astype(np.float32))
  return x


def _brightness(x, f):
  return np.clip(x * f[:, None, None, None], 0.0, 1.0)


def _contrast(x, f):
  mean = _luma(x).mean(axis=(1, 2, 3), keepdims=True)
  return np.clip(mean + (x - mean) * f[:, None, None, None], 0.0, 1.0)


def _saturation(x, f):
  gray = _luma(x)
  return np.clip(gray + (x - gray) * f[:, None, None, None], 0.0, 1.0)


def _hue(x, shift):
  """Rotates the chroma plane of YIQ by ``shift`` turns: torchvision's HSV hue shift, approximately (the two
  agree on the hue angle, not exactly on how saturation is kept)."""
  angle = 2 * np.pi * shift
  cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
  rot = np.zeros((len(shift), 3, 3), np.float32)
  rot[:, 0, 0] = 1.0
  rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
  m = _FROM_YIQ @ rot @ _TO_YIQ                                   # [B, 3, 3]
  return np.clip(np.einsum('bhwc,bdc->bhwd', x, m), 0.0, 1.0)


_ADJUST = {'brightness': _brightness, 'contrast': _contrast, 'saturation': _saturation, 'hue': _hue}


# ---------------------------------------------------------------------------------------------- blur


def gaussian_blur(x: np.ndarray, sigma: np.ndarray, max_sigma: float | None = None) -> np.ndarray:
  """Separable Gaussian blur of every image with its own ``sigma`` [B] (pixels); edges reflect. The kernel spans
  a tenth of the image side (SimCLR's), at least 3 taps, cut at 3 sigma of ``max_sigma`` (the configured bound;
  default the widest of ``sigma``; what lies beyond weighs under 0.3%): a sum of shifted copies, one per tap.
  Pass the bound where rows are split across processes: a radius from the rows at hand would make a row's blur
  depend on which rows share its process."""
  sigma = np.asarray(sigma, np.float32)
  widest = float(sigma.max()) if max_sigma is None else float(max_sigma)
  radius = max(1, min(int(round(0.05 * x.shape[1])), math.ceil(3 * widest)))
  t = np.arange(-radius, radius + 1, dtype=np.float32)
  k = np.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
  k /= k.sum(axis=1, keepdims=True)                               # [B, 2r + 1]
  for axis in (1, 2):
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    padded, n = np.pad(x, pad, mode='reflect'), x.shape[axis]
    out = np.zeros_like(x)
    for j in range(2 * radius + 1):
      window = [slice(None)] * 4
      window[axis] = slice(j, j + n)
      out += padded[tuple(window)] * k[:, j, None, None, None]
    x = out
  return x
