"""Jigsaw puzzles: an image cut into ``grid x grid`` tiles, shuffled; the network tells how.

Tiles. The image is divided into ``grid x grid`` cells (any remainder of H or W is split evenly around them);
each tile is a ``tile_size`` square cropped at a random offset inside its cell (``jitter``), so neighbouring
tiles are separated by a random gap and the network cannot match edges or continue lines across them. The
default ``tile_size`` is the cell size minus ``gap`` (default: about 15% of the cell, at least one pixel;
Noroozi & Favaro crop 64 of 75 pixels). With ``tile_norm`` each tile is standardized by its own mean and
standard deviation on device, so absolute brightness or contrast cannot place it. Cutting and shuffling is
vectorized numpy over the whole batch; tiles stay uint8 until they reach the device.

Two tasks:

* :class:`JigsawPermutation` (Noroozi & Favaro, ECCV 2016): each puzzle is shuffled by one of a fixed set of
  P permutations chosen for large pairwise Hamming distance (:mod:`jaxssl.tasks.permutations`); the label
  is its index. Context-free network: the backbone encodes every tile alone with shared weights (tiles are
  folded into the batch axis), the tile features are concatenated in puzzle order and an MLP classifies the
  permutation. The backbone is built for the tile shape (:meth:`backbone_input_shape`).
* :class:`JigsawCoords`: the shuffled tiles are laid out again as one ``grid*tile`` square image and a linear
  head regresses, for every position, the (row, col) that tile came from, normalized to [0, 1] (grid units
  divided by grid - 1); loss MSE, metric ``exact`` = fraction of tiles whose rounded prediction is right in
  both coordinates, ``solved`` = fraction of puzzles with every tile right.

Batch layouts (example axis first, so batches shard over devices):
  permutation: ``tiles`` uint8 [B, T, t, t, C] in shuffled order, ``label`` int32 [B], ``weight`` f32 [B];
  coords: ``image`` uint8 [B, g*t, g*t, C], ``coords`` int32 [B, T, 2] (grid units), ``weight`` f32 [B].
Position i of a puzzle shows source tile ``perm[i]`` (tiles numbered row-major), so ``tiles[argsort(perm)]``
restores the source order.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxssl.tasks import permutations as perm_lib
from jaxssl.tasks.base import Batch, LinearHead, Task, head_input, normalize, topk_correct, weighted_mean

TILE_NORM_EPS = 1e-3   # variance floor on [0, 1] pixels: flat (background) tiles stay near 0, not amplified noise


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Where the tiles of a ``grid x grid`` puzzle lie in an image of a given size."""
  grid: int
  tile: int
  cell: tuple[int, int]      # (cell height, cell width)
  origin: tuple[int, int]    # top-left pixel of cell (0, 0)

  @property
  def num_tiles(self) -> int:
    return self.grid * self.grid

  @property
  def slack(self) -> tuple[int, int]:
    """How far a tile can move inside its cell, per axis."""
    return self.cell[0] - self.tile, self.cell[1] - self.tile


def tile_geometry(image_shape, grid: int, tile_size: int = 0, gap: int | None = None) -> Geometry:
  h, w = int(image_shape[0]), int(image_shape[1])
  if grid < 2:
    raise ValueError(f'grid must be at least 2, got {grid}')
  ch, cw = h // grid, w // grid
  if gap is None:
    gap = max(1, round(0.15 * min(ch, cw)))
  tile = tile_size or min(ch, cw) - gap
  if not 1 <= tile <= min(ch, cw):
    raise ValueError(f'a {grid}x{grid} grid on {h}x{w} images has {ch}x{cw} cells: tile_size={tile} '
                     f'(tile_size={tile_size}, gap={gap}) must be between 1 and {min(ch, cw)}')
  return Geometry(grid, tile, (ch, cw), ((h - grid * ch) // 2, (w - grid * cw) // 2))


def cut_tiles(images: np.ndarray, rng: np.random.Generator, geo: Geometry, *, jitter: bool = True):
  """[B, H, W, C] -> (tiles [B, T, t, t, C] in row-major source order, corners int32 [B, T, 2]).

  ``corners`` is each tile's top-left pixel in its source image; with ``jitter`` every tile sits at an
  independent uniform offset inside its cell, otherwise in the cell's centre.
  """
  b, t, g = images.shape[0], geo.tile, geo.grid
  cell = np.asarray(geo.cell)
  slack = np.asarray(geo.slack)
  if jitter:
    offsets = rng.integers(0, slack + 1, size=(b, g * g, 2))
  else:
    offsets = np.broadcast_to(slack // 2, (b, g * g, 2))
  cells = np.stack(np.divmod(np.arange(g * g), g), axis=-1)                      # [T, 2] (row, col)
  corners = (np.asarray(geo.origin) + cells * cell + offsets).astype(np.int32)   # [B, T, 2]
  rows = corners[..., 0, None] + np.arange(t)                                    # [B, T, t]
  cols = corners[..., 1, None] + np.arange(t)
  tiles = images[np.arange(b)[:, None, None, None], rows[..., :, None], cols[..., None, :]]
  return tiles, corners


def shuffle_tiles(tiles: np.ndarray, perms: np.ndarray) -> np.ndarray:
  """Position i of puzzle b shows tile ``perms[b, i]``: [B, T, ...] -> [B, T, ...]."""
  return tiles[np.arange(tiles.shape[0])[:, None], perms]


def assemble(tiles: np.ndarray, grid: int) -> np.ndarray:
  """[B, T, t, t, C] -> [B, grid*t, grid*t, C], position i at grid cell (i // grid, i % grid)."""
  b, _, t, _, c = tiles.shape
  return tiles.reshape(b, grid, grid, t, t, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, grid * t, grid * t, c)


def standardize(x: jax.Array, axes) -> jax.Array:
  mean = jnp.mean(x, axis=axes, keepdims=True)
  var = jnp.var(x, axis=axes, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + TILE_NORM_EPS)


@functools.lru_cache(maxsize=8)
def _cached_permutations(num_tiles: int, num_perms: int, seed: int) -> np.ndarray:
  perms = perm_lib.hamming_permutations(num_tiles, num_perms, seed)
  perms.flags.writeable = False
  return perms


@dataclasses.dataclass
class _Jigsaw(Task):
  """Tile geometry and preprocessing shared by both jigsaw tasks."""
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'jigsaw'
  grid: int = 3
  tile_size: int = 0          # 0: the largest tile that leaves `gap` pixels of slack in each cell
  gap: int | None = None      # slack per cell (default ~15% of the cell, >= 1)
  jitter: bool = True         # tiles at random offsets inside their cells (else centred)
  tile_norm: bool = True      # standardize every tile by its own mean/std (else the dataset's)
  feature: str | None = None  # backbone feature the head reads; None: the backbone's output_name

  def __post_init__(self):
    # What can be checked without the image size (tile_geometry checks the rest once the dataset is known).
    if int(self.grid) < 2:
      raise ValueError(f"task '{self.name}': grid must be at least 2, got {self.grid}")
    if int(self.tile_size) < 0 or (self.gap is not None and int(self.gap) < 0):
      raise ValueError(f"task '{self.name}': tile_size={self.tile_size} and gap={self.gap} must not be negative "
                       '(tile_size 0 and gap None choose them from the image size)')

  def geometry(self, image_shape) -> Geometry:
    return tile_geometry(image_shape, self.grid, self.tile_size, self.gap)

  def puzzles(self, images: np.ndarray, rng: np.random.Generator) -> Batch:
    raise NotImplementedError

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    del train  # the puzzles are the task, not an augmentation: eval draws them too (from its seeded rng)
    out = self.puzzles(batch['image'], rng)
    del out['corners']
    return {**out, 'weight': np.asarray(batch['weight'], np.float32)}


class JigsawHead(nnx.Module):
  """Context-free network top: tile features concatenated in puzzle order -> Linear -> ReLU -> Linear.

  The last layer starts at zero (every permutation equally likely), as LinearHead does.
  """

  def __init__(self, tile_features: int, num_tiles: int, hidden: int, num_outputs: int, *, feature: str,
               rngs: nnx.Rngs):
    self.feature = feature
    self.num_tiles = num_tiles
    self.hidden = nnx.Linear(num_tiles * tile_features, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, num_outputs, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

  def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
    h = features[self.feature].astype(jnp.float32)             # [B*T, ...]
    h = h.reshape(h.shape[0] // self.num_tiles, -1)           # [B, T*D], tiles in puzzle order
    return self.out(jax.nn.relu(self.hidden(h)))


@dataclasses.dataclass
class JigsawPermutation(_Jigsaw):
  """Classify which of a fixed set of maximally distant permutations shuffled the tiles."""
  num_permutations: int = 100     # P, capped at grid²! (all 24 for 2x2)
  permutation_seed: int = 0
  permutations_path: str = ''     # a saved permutations.npy to use instead of generating the set
  hidden_size: int = 512          # the MLP head's hidden layer

  def __post_init__(self):
    super().__post_init__()
    t = self.grid * self.grid
    num = min(int(self.num_permutations), math.factorial(t)) if t <= perm_lib.MAX_ENUMERATED_TILES \
        else int(self.num_permutations)
    if self.permutations_path:
      perms = perm_lib.load_permutations(self.permutations_path, t)
      if len(perms) != num:
        raise ValueError(f"task '{self.name}': {self.permutations_path} holds {len(perms)} permutations but "
                         f'num_permutations={self.num_permutations}; set num_permutations={len(perms)}')
    else:
      perms = _cached_permutations(t, num, int(self.permutation_seed))
    self._perms = perms

  @property
  def permutations(self) -> np.ndarray:
    """int32 [P, T]: row p is the permutation with label p."""
    return self._perms

  @property
  def num_outputs(self) -> int:
    return len(self._perms)

  def artifacts(self) -> dict[str, np.ndarray]:
    """Files to keep with the run: the permutation set defines what the labels mean."""
    return {'permutations.npy': np.array(self._perms)}

  def backbone_input_shape(self, dataset_shape) -> tuple[int, ...]:
    t = self.geometry(dataset_shape).tile
    return (t, t, *dataset_shape[2:])

  def puzzles(self, images: np.ndarray, rng: np.random.Generator) -> Batch:
    """``tiles`` (shuffled), ``label`` and each source tile's ``corners`` (see :func:`cut_tiles`)."""
    tiles, corners = cut_tiles(images, rng, self.geometry(images.shape[1:]), jitter=self.jitter)
    label = rng.integers(0, len(self._perms), size=images.shape[0]).astype(np.int32)
    return {'tiles': shuffle_tiles(tiles, self._perms[label]), 'label': label, 'corners': corners}

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    feature, in_features, _ = head_input(backbone, self.backbone_input_shape(input_shape), self.feature, self.name)
    return JigsawHead(in_features, self.grid * self.grid, self.hidden_size, self.num_outputs,
                      feature=feature, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    tiles = batch['tiles']                                        # [B, T, t, t, C]
    x = tiles.reshape(-1, *tiles.shape[2:])                       # [B*T, t, t, C], puzzle-major
    if self.tile_norm:
      x = standardize(x.astype(jnp.float32) / 255.0, axes=(1, 2, 3))
    else:
      x = normalize(x, self.mean, self.std)
    return head(backbone(x, train=train, rng=rng))

  def loss(self, logits: jax.Array, batch: Batch):
    labels, weight = batch['label'], batch['weight']
    loss = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), weight)
    return loss, {'loss': loss, 'acc': weighted_mean(topk_correct(logits, labels, 1), weight),
                  'top5': weighted_mean(topk_correct(logits, labels, 5), weight)}


@dataclasses.dataclass
class JigsawCoords(_Jigsaw):
  """Regress every shuffled tile's original (row, col), from the tiles laid out as one image."""
  name: str = 'jigsaw_coords'

  def backbone_input_shape(self, dataset_shape) -> tuple[int, ...]:
    side = self.grid * self.geometry(dataset_shape).tile
    return (side, side, *dataset_shape[2:])

  def puzzles(self, images: np.ndarray, rng: np.random.Generator) -> Batch:
    """``image`` (the shuffled tiles laid out), ``coords`` and each source tile's ``corners``."""
    g = self.grid
    tiles, corners = cut_tiles(images, rng, self.geometry(images.shape[1:]), jitter=self.jitter)
    perms = np.argsort(rng.random((images.shape[0], g * g)), axis=1)   # a uniform permutation per puzzle
    coords = np.stack(np.divmod(perms, g), axis=-1).astype(np.int32)   # [B, T, 2]: where position i came from
    return {'image': assemble(shuffle_tiles(tiles, perms), g), 'coords': coords, 'corners': corners}

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    feature, in_features, _ = head_input(backbone, self.backbone_input_shape(input_shape), self.feature, self.name)
    return LinearHead(in_features, self.grid * self.grid * 2, feature=feature, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    images = batch['image']                                       # [B, g*t, g*t, C]
    b, side, _, c = images.shape
    g, t = self.grid, side // self.grid
    if self.tile_norm:
      x = images.astype(jnp.float32).reshape(b, g, t, g, t, c) / 255.0
      x = standardize(x, axes=(2, 4, 5)).reshape(images.shape)
    else:
      x = normalize(images, self.mean, self.std)
    return head(backbone(x, train=train, rng=rng)).reshape(b, g * g, 2)

  def loss(self, pred: jax.Array, batch: Batch):
    coords, weight = batch['coords'], batch['weight']
    scale = self.grid - 1
    per_example = jnp.mean(optax.squared_error(pred, coords.astype(jnp.float32) / scale), axis=(1, 2))
    loss = weighted_mean(per_example, weight)
    right = jnp.all(jnp.round(pred * scale) == coords, axis=-1).astype(jnp.float32)   # [B, T]
    return loss, {'loss': loss, 'exact': weighted_mean(jnp.mean(right, axis=1), weight),
                  'solved': weighted_mean(jnp.min(right, axis=1), weight)}
