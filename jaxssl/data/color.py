"""CIE Lab colour, in numpy: sRGB <-> CIE L*a*b* (D65 white, 2 degree observer), the conversion colorization
(jaxssl/tasks/colorization.py) uses to split an image into lightness (the network's input) and chroma (its target).

sRGB values in [0, 1] are linearized with the sRGB transfer function (IEC 61966-2-1), taken to CIE XYZ with the
sRGB primaries' matrix, divided by the D65 white point and mapped to Lab with the CIE 1976 formulas (the cube root
with its linear segment below (6/29)^3). L lies in [0, 100]; a and b of sRGB colours in about [-87, 99] and
[-108, 95]. ``lab_to_rgb`` inverts every step exactly (to float rounding) for colours inside the sRGB gamut and
clips the rest, so an RGB -> Lab -> RGB round trip returns the image.

Everything works on arrays of any leading shape with the channel last, in float64 unless given float32 (the
pipeline converts whole batches at once).
"""

from __future__ import annotations

import numpy as np

# sRGB primaries and D65 white -> XYZ (IEC 61966-2-1), and its inverse.
RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
D65_WHITE = RGB_TO_XYZ.sum(axis=1)          # XYZ of sRGB white (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0


def _float(x) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def srgb_to_linear(c) -> np.ndarray:
  c = _float(c)
  return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c) -> np.ndarray:
  c = np.asarray(c)
  return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055)


def _f(t):
  return np.where(t > _DELTA ** 3, np.cbrt(t), t / (3 * _DELTA ** 2) + 4.0 / 29.0)


def _f_inv(t):
  return np.where(t > _DELTA, t ** 3, 3 * _DELTA ** 2 * (t - 4.0 / 29.0))


def rgb_to_lab(rgb) -> np.ndarray:
  """sRGB (uint8, or floats in [0, 1]) [..., 3] -> Lab [..., 3] (L in [0, 100])."""
  rgb = _float(rgb)
  if rgb.shape[-1] != 3:
    raise ValueError(f'rgb_to_lab needs 3 colour channels last, got shape {rgb.shape}')
  xyz = srgb_to_linear(rgb) @ (RGB_TO_XYZ.T / D65_WHITE).astype(rgb.dtype)   # X/Xn, Y/Yn, Z/Zn
  fx, fy, fz = np.moveaxis(_f(xyz), -1, 0)
  return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1).astype(rgb.dtype)


def lab_to_linear_rgb(lab) -> np.ndarray:
  """Lab [..., 3] -> linear RGB [..., 3], unclipped (values outside [0, 1]: the colour is outside sRGB)."""
  lab = np.asarray(lab)
  lab = lab if lab.dtype in (np.float32, np.float64) else lab.astype(np.float64)
  fy = (lab[..., 0] + 16.0) / 116.0
  f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
  return (_f_inv(f) * D65_WHITE.astype(lab.dtype)) @ XYZ_TO_RGB.T.astype(lab.dtype)


def lab_to_rgb(lab) -> np.ndarray:
  """Lab [..., 3] -> sRGB floats in [0, 1] [..., 3] (colours outside the sRGB gamut clipped)."""
  return np.clip(linear_to_srgb(np.clip(lab_to_linear_rgb(lab), 0.0, 1.0)), 0.0, 1.0)


def to_uint8(rgb) -> np.ndarray:
  """sRGB floats in [0, 1] -> uint8 (rounded)."""
  return np.round(np.clip(np.asarray(rgb), 0.0, 1.0) * 255.0).astype(np.uint8)


def in_gamut(lab, tol: float = 0.0) -> np.ndarray:
  """Whether each Lab colour [..., 3] is an sRGB colour (its linear RGB within [-tol, 1 + tol])."""
  lin = lab_to_linear_rgb(lab)
  return np.all((lin >= -tol) & (lin <= 1.0 + tol), axis=-1)


def lightness_to_gray(lightness) -> np.ndarray:
  """L [...] -> the uint8 sRGB grey of that lightness (a = b = 0: R = G = B), [..., 1]."""
  y = _f_inv((np.asarray(lightness) + 16.0) / 116.0)      # relative luminance; grey's linear R = G = B = Y
  return to_uint8(linear_to_srgb(np.clip(y, 0.0, 1.0)))[..., None]


def srgb_cube_surface() -> np.ndarray:
  """uint8 [6 * 256 * 256, 3]: every 8-bit sRGB colour with a channel at 0 or 255. Each colour's (a, b) is also
  that of a colour on this surface (along a line of constant chroma the colour leaves the cube through it), so
  these colours cover exactly the ab values sRGB reaches."""
  u, v = np.meshgrid(np.arange(256), np.arange(256), indexing='ij')
  u, v = u.reshape(-1), v.reshape(-1)
  faces = []
  for channel in range(3):
    for value in (0, 255):
      others = [u, v]
      face = [others.pop(0) if c != channel else np.full_like(u, value) for c in range(3)]
      faces.append(np.stack(face, axis=-1))
  return np.concatenate(faces).astype(np.uint8)
