"""A picture of the first convolution's kernels (``filters.png``): what a network learned to look for in pixels.

Each kernel is one tile, stretched to [0, 1] on its own (min to max), so that a weak filter is as visible as a
strong one; greyscale for 1-channel inputs, RGB for 3-channel ones, the mean over input channels otherwise.
Written at the end of every training run, and by ``python -m jaxssl.report --filters`` from any checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jaxssl import files, trees
from jaxssl.eval import plots
from jaxssl.eval.base import Evaluator


def first_conv(arrays: dict[tuple[str, ...], Any]) -> tuple[tuple[str, ...], np.ndarray] | None:
  """(path, kernel [kh, kw, in, out]) of the conv that sees the pixels, from a backbone's arrays by path.

  That is the conv kernel with the fewest input channels (the image's 1 or 3; every later conv reads a
  feature map of many channels); ties go to the first path in sorted order. Arrays alone decide it, so a
  checkpoint needs neither its dataset nor a model built for the right input size.
  """
  kernels = sorted((int(np.shape(v)[2]), path) for path, v in arrays.items()
                   if path and path[-1] == 'kernel' and np.ndim(v) == 4)
  if not kernels:
    return None
  path = kernels[0][1]
  kernel = arrays[path]
  if hasattr(kernel, 'addressable_data'):  # replicated over a mesh (maybe over hosts): any local copy is whole
    kernel = kernel.addressable_data(0)
  return path[:-1], np.asarray(kernel, np.float32)


def filter_tiles(kernel) -> np.ndarray:
  """[out, kh, kw] (greyscale) or [out, kh, kw, 3] (RGB) display tiles, each min-max scaled to [0, 1]."""
  k = np.asarray(kernel, np.float64)
  if k.ndim != 4:
    raise ValueError(f'expected a conv kernel [kh, kw, in, out], got shape {k.shape}')
  k = np.moveaxis(k, -1, 0)                                  # [out, kh, kw, in]
  k = k if k.shape[-1] == 3 else k.mean(axis=-1)             # RGB, or one grey value per pixel
  lo = k.min(axis=tuple(range(1, k.ndim)), keepdims=True)
  span = k.max(axis=tuple(range(1, k.ndim)), keepdims=True) - lo
  return np.where(span > 0, (k - lo) / np.where(span > 0, span, 1.0), 0.5)


def filter_grid(kernel, pad: int = 1, cols: int | None = None) -> np.ndarray:
  """The tiles of ``filter_tiles`` laid out row by row, ``pad`` NaN pixels apart: [H, W] or [H, W, 3].

  Tile i sits at row ``i // cols``, column ``i % cols``, its top-left corner at ``(r * (kh + pad), c * (kw + pad))``.
  """
  tiles = filter_tiles(kernel)
  n, kh, kw = tiles.shape[:3]
  cols = cols or math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.full((rows * (kh + pad) - pad, cols * (kw + pad) - pad, *tiles.shape[3:]), np.nan)
  for i, tile in enumerate(tiles):
    r, c = divmod(i, cols)
    grid[r * (kh + pad):r * (kh + pad) + kh, c * (kw + pad):c * (kw + pad) + kw] = tile
  return grid


def show_grid(ax, grid: np.ndarray) -> None:
  """Draws a :func:`filter_grid` on ``ax`` (axes off): grey tiles with separators in a colour no grey pixel has,
  or RGB tiles on white."""
  plt = plots.plt
  if grid.ndim == 2:
    ax.imshow(grid, cmap=plt.get_cmap('gray').with_extremes(bad='#4a78b5'), vmin=0, vmax=1,
              interpolation='nearest')
  else:
    ax.imshow(np.nan_to_num(grid, nan=1.0), interpolation='nearest')
  ax.axis('off')


def write_filters(kernel, path: str, title: str = '') -> str:
  """``filter_grid`` of ``kernel`` as a PNG (:func:`jaxssl.files.save_figure`: any path, written whole)."""
  plt = plots.plt
  kernel = np.asarray(kernel)
  grid = filter_grid(kernel)
  scale = 4.5 / max(grid.shape[:2])
  fig, ax = plt.subplots(figsize=(max(2.5, grid.shape[1] * scale), max(2.5, grid.shape[0] * scale) + 0.5))
  show_grid(ax, grid)
  kh, kw, cin, cout = kernel.shape
  how = {1: 'greyscale', 3: 'RGB'}.get(cin, f'mean of {cin} input channels')
  what = f'{cout} kernels {kh}x{kw}, {how}, each scaled to its own range'
  ax.set_title(f'{title}\n{what}' if title else what, fontsize=8)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)
  plt.close(fig)
  return path


@dataclasses.dataclass
class Filters(Evaluator):
  """``filters.png`` of the trained backbone's first convolution at the end of training (process 0; nothing
  for a backbone without one)."""
  at: tuple[str, ...] = ('final',)

  def run(self, state, phase: str) -> dict:
    if jax.process_index():
      return {}
    found = first_conv(trees.flat_paths(state.params['backbone']))
    if found is None:
      return {}
    path, kernel = found
    name = files.basename(files.abspath(self.ctx.workdir))
    write_filters(kernel, self.stem('filters', state, phase) + '.png',
                  f'{name}: {self.ctx.config.model.name} {"/".join(path)} at step {int(state.step)}')
    return {}
