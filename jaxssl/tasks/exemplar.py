"""Exemplar CNN (Dosovitskiy, Springenberg, Riedmiller & Brox, NIPS 2014): every one of N seed images is a class.

N training images ("exemplars") are chosen once, from ``exemplar_seed``; each training example is one exemplar
under a random composition of the seed experiment's six transformations, and the network classifies which of
the N exemplars it shows (N-way softmax). The dataset's labels are never read.

How a batch is formed. The pipeline hands every task a batch of training records; this task does not use their
images. The task holds the N exemplar images itself (read from the run's training split when the task is built:
8,000 Fashion-MNIST images are 6 MB) and, for every row of the batch, draws an exemplar id and the parameters of
its transformations from the batch's generator (every draw has the batch size first, so a row's example does not
depend on how many devices or processes share the batch). The records' rows thus only fix the batch size and the
padding weights, and another task on the same batch (the online probe, ``config.online_probe``) still trains on
the records themselves. Evaluation draws exemplars and fresh transformations from the eval split's seeded
generator, so ``exemplar/acc`` is the accuracy on random new views of the exemplars (chance 1/N), the same views
at every evaluation.

K transformations per exemplar. The paper made a fixed surrogate dataset of K transformed copies of each
exemplar. ``transforms_per_exemplar=K > 0`` does the same: a table of K parameter sets per exemplar is drawn once
from the seed and a training row draws (exemplar, k); ``0`` draws new parameters for every example (an unbounded
K; in the paper more views per class helped).

Transformations (``transforms``, any subset; magnitudes are options): ``translate`` (up to ``translate`` of the
side, each axis), ``scale`` (a zoom factor in ``scale``, log-uniform), ``rotate`` (up to ``rotate`` degrees either
way), ``contrast`` (the paper's "contrast 2" on intensity: v -> multiply * v ** power + add, with v the grey value,
or the HSV value of a colour image), ``colour`` (colour images only: the hue shifted by up to ``hue`` of the
circle and the saturation through its own power, multiply and add; ignored for grey images), ``flip`` (left-right
with probability 1/2). The geometric ones are one affine map per image, resampled bilinearly; pixels from outside
the image are ``fill``: ``zero`` (Fashion-MNIST's background), ``edge`` or ``reflect`` (photos).

Scaling limit. The head is a D x N linear layer over N classes and each exemplar is seen about
batch x steps / N times: the parameters and the softmax grow linearly with N, and each class's weights get
rarer updates as N grows (the paper tried N from 50 to 32,000 and used 8,000; many seeds are also alike, which
makes classes hard to tell apart without making the features better). Held in memory, the exemplars themselves
grow with N too (see ``MAX_EXEMPLAR_BYTES``). Treating every image of a large dataset as its own class is what
non-parametric instance discrimination (a memory bank, Wu et al. 2018) and contrastive losses over the batch
(SimCLR) replaced this head with.

Saved with the run (``artifacts/<task>/``): ``exemplar_indices.npy`` (the records of the training split, as the
run sees it, that are classes 0..N-1) and ``exemplars.npy`` (their images); ``indices_path`` reuses a saved set.

Batch layout: ``image`` uint8 [B, H, W, C] (a transformed exemplar per row), ``label`` int32 [B] (its exemplar
id), ``weight`` f32 [B] (the records' weights: padding rows 0).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxssl.data.sources import read_records
from jaxssl.tasks.base import Batch, LinearHead, Task, head_input, normalize, topk_correct, weighted_mean

TRANSFORMS = ('translate', 'scale', 'rotate', 'contrast', 'colour', 'flip')
GEOMETRIC = ('translate', 'scale', 'rotate', 'flip')
FILLS = ('zero', 'edge', 'reflect')
# The exemplars are held in memory (and copied to each grain worker process): refuse sets larger than this.
MAX_EXEMPLAR_BYTES = 1 << 30
# A table of fixed transformations (transforms_per_exemplar > 0) holds this many parameters per (exemplar, k).
PARAMS = ('ty', 'tx', 'scale', 'angle', 'flip', 'power', 'multiply', 'add', 'hue', 'sat_power', 'sat_multiply',
          'sat_add')


# ---------------------------------------------------------------------------------------------- drawing


def draw_params(draw, n: int, *, translate: float, scale: tuple[float, float], rotate: float,
                power: tuple[float, float], multiply: tuple[float, float], add: float, hue: float,
                enabled=TRANSFORMS) -> dict[str, np.ndarray]:
  """Parameters of ``n`` random transformations, float32 [n] each (see :data:`PARAMS`); the disabled ones are
  the identity. ``draw`` is a numpy Generator or the pipeline's RowGenerator: every draw has size (n,), and
  every parameter is drawn whichever transformations are enabled, so turning one off changes no other draw."""
  def log_uniform(lo_hi):
    lo, hi = (float(v) for v in lo_hi)
    return np.exp(draw.uniform(math.log(lo), math.log(hi), size=(n,)))

  p = {
      'ty': draw.uniform(-translate, translate, size=(n,)),
      'tx': draw.uniform(-translate, translate, size=(n,)),
      'scale': log_uniform(scale),
      'angle': draw.uniform(-rotate, rotate, size=(n,)),
      'flip': (draw.random(size=(n,)) < 0.5).astype(np.float64),
      'power': log_uniform(power),
      'multiply': draw.uniform(multiply[0], multiply[1], size=(n,)),
      'add': draw.uniform(-add, add, size=(n,)),
      'hue': draw.uniform(-hue, hue, size=(n,)),
      'sat_power': log_uniform(power),
      'sat_multiply': draw.uniform(multiply[0], multiply[1], size=(n,)),
      'sat_add': draw.uniform(-add, add, size=(n,)),
  }
  identity = {'ty': 0.0, 'tx': 0.0, 'scale': 1.0, 'angle': 0.0, 'flip': 0.0, 'power': 1.0, 'multiply': 1.0,
              'add': 0.0, 'hue': 0.0, 'sat_power': 1.0, 'sat_multiply': 1.0, 'sat_add': 0.0}
  owner = {'ty': 'translate', 'tx': 'translate', 'scale': 'scale', 'angle': 'rotate', 'flip': 'flip',
           'power': 'contrast', 'multiply': 'contrast', 'add': 'contrast', 'hue': 'colour', 'sat_power': 'colour',
           'sat_multiply': 'colour', 'sat_add': 'colour'}
  return {k: (v if owner[k] in enabled else np.full(n, identity[k])).astype(np.float32) for k, v in p.items()}


# ------------------------------------------------------------------------------------- applying (numpy)


def _col(a) -> np.ndarray:
  """Per-image values [B] -> [B, 1, 1], to broadcast over an image's pixels."""
  return np.asarray(a, np.float32)[:, None, None]


def _source_index(i: np.ndarray, size: int, fill: str) -> tuple[np.ndarray, np.ndarray]:
  """Integer pixel positions -> (positions inside the image, whether the pixel exists) under ``fill``."""
  if fill == 'zero':
    return np.clip(i, 0, size - 1), (i >= 0) & (i < size)
  if fill == 'edge' or size == 1:
    return np.clip(i, 0, size - 1), np.ones(i.shape, bool)
  period = 2 * (size - 1)                      # reflect: ... 2 1 | 0 1 2 ... n-1 | n-2 ...
  i = np.abs(i) % period
  return np.where(i > size - 1, period - i, i), np.ones(i.shape, bool)


def warp(images: np.ndarray, p: dict[str, np.ndarray], fill: str = 'zero') -> np.ndarray:
  """Every image under its own affine map, bilinear: uint8 [B, H, W, C] -> float32 [B, H, W, C] (0..255).

  Image ``b`` is mirrored left-right if ``flip[b]``, zoomed by ``scale[b]`` (> 1 enlarges) and rotated by
  ``angle[b]`` degrees counter-clockwise as displayed, all about the image centre, then shifted by
  (``ty[b]``, ``tx[b]``) times its height and width (down, right). Each output pixel reads the input point the
  inverse map sends it to.
  """
  b, h, w, _ = images.shape
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  u = np.arange(h, dtype=np.float32)[None, :, None] - cy - _col(p['ty']) * h      # [B, H, 1] rows from the centre
  v = np.arange(w, dtype=np.float32)[None, None, :] - cx - _col(p['tx']) * w      # [B, 1, W] columns
  theta = np.deg2rad(_col(p['angle']))
  cos, sin, inv = np.cos(theta), np.sin(theta), 1.0 / _col(p['scale'])
  # Undo the rotation (counter-clockwise on screen, where rows grow downwards), then the zoom, then the mirror.
  sy = (cos * u + sin * v) * inv + cy
  sx = (cos * v - sin * u) * inv
  sx = np.where(_col(p['flip']) > 0.5, -sx, sx) + cx
  y0, x0 = np.floor(sy), np.floor(sx)
  wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
  y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
  rows = np.arange(b)[:, None, None]
  out = np.zeros(images.shape, np.float32)
  for dy, dx, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
    yi, y_ok = _source_index(y0 + dy, h, fill)
    xi, x_ok = _source_index(x0 + dx, w, fill)
    out += weight * np.where((y_ok & x_ok)[..., None], images[rows, yi, xi], 0).astype(np.float32)
  return out


def _curve(x: np.ndarray, power, multiply, add) -> np.ndarray:
  """The paper's "contrast 2" on values in [0, 1]: multiply * x ** power + add, clipped."""
  return np.clip(multiply * np.power(x, power) + add, 0.0, 1.0)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """[..., 3] in [0, 1] -> hue (a fraction of the circle), saturation, value; colorsys's formulas, vectorized."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc, minc = rgb.max(-1), rgb.min(-1)
  delta = maxc - minc
  safe = np.where(delta > 0, delta, 1.0)
  s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
  h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
  return np.stack([h, s, maxc], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """The inverse of :func:`rgb_to_hsv`."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  i = np.floor(h * 6.0)
  f = h * 6.0 - i
  p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
  i = i.astype(np.int64) % 6
  sextant = [np.choose(i, c) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))]
  return np.stack(sextant, -1)


def photometric(x: np.ndarray, p: dict[str, np.ndarray], enabled=TRANSFORMS) -> np.ndarray:
  """float32 [B, H, W, C] in 0..255 -> the same after ``contrast`` (and ``colour`` where C == 3)."""
  contrast, colour = 'contrast' in enabled, 'colour' in enabled and x.shape[-1] == 3
  if not (contrast or colour):
    return x
  x = x / 255.0
  if x.shape[-1] != 3:
    return 255.0 * _curve(x, _col(p['power'])[..., None], _col(p['multiply'])[..., None], _col(p['add'])[..., None])
  hsv = rgb_to_hsv(x)
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  if colour:
    h = (h + _col(p['hue'])) % 1.0
    s = _curve(s, _col(p['sat_power']), _col(p['sat_multiply']), _col(p['sat_add']))
  if contrast:
    v = _curve(v, _col(p['power']), _col(p['multiply']), _col(p['add']))
  return 255.0 * hsv_to_rgb(np.stack([h, s, v], -1))


def apply_transforms(images: np.ndarray, p: dict[str, np.ndarray], *, enabled=TRANSFORMS,
                     fill: str = 'zero') -> np.ndarray:
  """uint8 [B, H, W, C] under the transformations ``p`` (one set per row): uint8 [B, H, W, C]."""
  x = warp(images, p, fill) if any(t in enabled for t in GEOMETRIC) else images.astype(np.float32)
  return np.clip(np.rint(photometric(x, p, enabled)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ loss


def exemplar_loss(logits: jax.Array, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Pure: N-way softmax cross-entropy of the exemplar ids, weighted; ``acc`` and ``top5``."""
  labels, weight = batch['label'], batch['weight']
  loss = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels), weight)
  return loss, {'loss': loss, 'acc': weighted_mean(topk_correct(logits, labels, 1), weight),
                'top5': weighted_mean(topk_correct(logits, labels, 5), weight)}


# ------------------------------------------------------------------------------------------------ task


def choose_exemplars(num_records: int, num: int, seed: int) -> np.ndarray:
  """``num`` distinct record indices of ``num_records``, from ``seed`` alone, ascending (class i = the i-th)."""
  if not 1 <= num <= num_records:
    raise ValueError(f'cannot choose {num} exemplars from {num_records} training records')
  return np.sort(np.random.default_rng(seed).permutation(num_records)[:num]).astype(np.int64)


@dataclasses.dataclass
class Exemplar(Task):
  """Classify which of ``num_exemplars`` seed images a randomly transformed view shows."""
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'exemplar'
  num_exemplars: int = 8000          # N: the classes (the head is D x N)
  transforms_per_exemplar: int = 0   # K: a fixed table of K transformations per exemplar; 0 = new ones every time
  exemplar_seed: int = 0             # chooses the exemplars (and the table of K)
  indices_path: str = ''             # a saved exemplar_indices.npy to use instead of choosing from the seed
  transforms: tuple[str, ...] = TRANSFORMS
  translate: float = 0.2             # of the image side, each axis, either way
  scale: tuple[float, float] = (0.7, 1.4)
  rotate: float = 20.0               # degrees, either way
  power: tuple[float, float] = (0.25, 4.0)   # contrast: v ** power (log-uniform), then * multiply + add
  multiply: tuple[float, float] = (0.7, 1.4)
  add: float = 0.1
  hue: float = 0.1                   # colour: of the hue circle, either way
  fill: str = 'zero'                 # pixels from outside the image: zero, edge or reflect
  feature: str | None = None         # the backbone feature the N-way head reads; None: its output_name
  # Filled by build_tasks from the run's training split (as the run sees it: limits and subsets applied).
  train_source: Any = dataclasses.field(default=None, repr=False, compare=False)

  FROM_DATASET: ClassVar[tuple[str, ...]] = Task.FROM_DATASET + ('train_source',)

  def __post_init__(self):
    def bad(what):
      return ValueError(f"task '{self.name}': {what}")
    self.transforms = tuple(self.transforms)
    unknown = set(self.transforms) - set(TRANSFORMS)
    if unknown:
      raise bad(f"unknown transform(s) {sorted(unknown)}; choose from: {', '.join(TRANSFORMS)}")
    if self.fill not in FILLS:
      raise bad(f"unknown fill '{self.fill}'; choose one of: {', '.join(FILLS)}")
    if int(self.num_exemplars) < 2 or int(self.transforms_per_exemplar) < 0:
      raise bad(f'num_exemplars={self.num_exemplars} must be >= 2 and transforms_per_exemplar='
                f'{self.transforms_per_exemplar} >= 0 (0: new transformations for every example)')
    self.scale, self.power, self.multiply = (tuple(float(v) for v in r) for r in (self.scale, self.power,
                                                                                    self.multiply))
    for key in ('scale', 'power', 'multiply'):
      lo, hi = getattr(self, key)
      if not 0 < lo <= hi:
        raise bad(f'{key}={getattr(self, key)} must be a range (low, high) with 0 < low <= high')
    if not (0 <= self.translate <= 1 and 0 <= self.rotate <= 180 and 0 <= self.add <= 1 and 0 <= self.hue <= 0.5):
      raise bad(f'translate={self.translate} (0..1 of the side), rotate={self.rotate} (0..180 degrees), add='
                f'{self.add} (0..1) and hue={self.hue} (0..0.5 of the circle) out of range')
    self._indices = self._exemplars = self._table = None
    if self.train_source is not None:
      self._load(self.train_source)
      self.train_source = None   # the images are held; the source need not travel to grain's worker processes

  # --------------------------------------------------------------------------- the exemplars and the table

  def _load(self, source) -> None:
    n = int(self.num_exemplars)
    if self.indices_path:
      indices = np.load(self.indices_path, allow_pickle=False)
      if indices.shape != (n,) or len(np.unique(indices)) != n or indices.min() < 0 or indices.max() >= len(source):
        raise ValueError(f"task '{self.name}': {self.indices_path} must hold {n} distinct record indices below "
                         f'{len(source)} (num_exemplars={n}, the training split as the run sees it); it holds '
                         f'{indices.shape} values')
      indices = indices.astype(np.int64)
    else:
      if n > len(source):
        raise ValueError(f"task '{self.name}': num_exemplars={n} but the training split has only {len(source)} "
                         'records (see data.train_limit); lower --config.tasks.<task>.num_exemplars')
      indices = choose_exemplars(len(source), n, int(self.exemplar_seed))
    first = np.asarray(read_records(source, indices[:1])[0]['image'])
    if n * first.nbytes > MAX_EXEMPLAR_BYTES:
      raise ValueError(f"task '{self.name}': {n} exemplars of {first.shape} would hold {n * first.nbytes / 2**20:.0f} "
                       f'MiB in memory (limit {MAX_EXEMPLAR_BYTES >> 20} MiB): lower num_exemplars or data.image_size')
    self.set_exemplars(np.stack([np.asarray(r['image']) for r in read_records(source, indices)]), indices)

  def set_exemplars(self, images: np.ndarray, indices: np.ndarray | None = None) -> None:
    """Uses ``images`` [N, H, W, C] uint8 as the exemplars (tests; a run reads them from its training split)."""
    images = np.asarray(images)
    if len(images) != int(self.num_exemplars):
      raise ValueError(f'{len(images)} images for num_exemplars={self.num_exemplars}')
    self._indices = np.arange(len(images)) if indices is None else np.asarray(indices, np.int64)
    self._exemplars = images
    n, k = len(images), int(self.transforms_per_exemplar)
    if k:  # the paper's fixed surrogate set: K parameter sets per exemplar, from the seed alone
      table = self._draw(np.random.default_rng([int(self.exemplar_seed), 1]), n * k)
      self._table = {name: v.reshape(n, k) for name, v in table.items()}

  @property
  def exemplars(self) -> np.ndarray:
    """uint8 [N, H, W, C]: image i is class i."""
    if self._exemplars is None:
      raise ValueError(f"task '{self.name}' has no exemplars: it is built with the run's training split "
                       '(jaxssl.tasks.build_tasks(..., train_source=...))')
    return self._exemplars

  @property
  def table(self) -> dict[str, np.ndarray] | None:
    """The fixed transformations (transforms_per_exemplar > 0): name -> float32 [N, K]; None otherwise."""
    return self._table

  def artifacts(self) -> dict[str, np.ndarray]:
    """The record indices that are the classes, and their images: what the labels mean."""
    if self._exemplars is None:
      return {}
    return {'exemplar_indices.npy': np.array(self._indices), 'exemplars.npy': np.array(self._exemplars)}

  def _draw(self, draw, n: int) -> dict[str, np.ndarray]:
    return draw_params(draw, n, translate=self.translate, scale=self.scale, rotate=self.rotate, power=self.power,
                       multiply=self.multiply, add=self.add, hue=self.hue, enabled=self.transforms)

  # ----------------------------------------------------------------------------------------- the contract

  def views(self, rng, batch_size: int, *, train: bool) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(exemplar ids int32 [B], transformed images uint8 [B, H, W, C], the parameters used [B] each), every draw
    per row: the ids, then (training with a table) which of the K, else fresh parameters."""
    exemplars = self.exemplars
    ids = rng.integers(0, len(exemplars), size=(batch_size,))
    if train and self._table is not None:
      k = rng.integers(0, int(self.transforms_per_exemplar), size=(batch_size,))
      params = {name: v[ids, k] for name, v in self._table.items()}
    else:
      params = self._draw(rng, batch_size)
    images = apply_transforms(exemplars[ids], params, enabled=self.transforms, fill=self.fill)
    return ids.astype(np.int32), images, params

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    weight = np.asarray(batch['weight'], np.float32)
    label, images, _ = self.views(rng, len(weight), train=train)
    return {'image': images, 'label': label, 'weight': weight}

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    feature, in_features, _ = head_input(backbone, input_shape, self.feature, self.name)
    return LinearHead(in_features, int(self.num_exemplars), feature=feature, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    return head(backbone(normalize(batch['image'], self.mean, self.std), train=train, rng=rng))

  def loss(self, outputs: jax.Array, batch: Batch):
    return exemplar_loss(outputs, batch)
