"""Colorization (Zhang, Isola & Efros, ECCV 2016): from an image's lightness, predict its colour.

Pipeline (numpy, whole batches): the RGB image goes to CIE Lab (jaxssl/data/color.py). The backbone sees the
lightness L alone, as the sRGB grey of that lightness in all three channels (normalized with the dataset's
statistics like any RGB input), so a colorization backbone is an ordinary 3-channel one and transfers to RGB tasks
unchanged. The target is the chroma (a, b), averaged over ``output_stride`` x ``output_stride`` blocks (the paper
predicts at a quarter of the input size: chroma needs little resolution, and the output stays small).

Two ways to predict it (``mode``):

* ``classification`` (the paper's): ab space is cut into ``bin_size`` squares and the Q squares sRGB colours reach
  are the classes (Q = 261 for 10: every 8-bit sRGB colour's ab is covered, :func:`ab_bins`); each target pixel is
  soft-encoded over its ``neighbours`` nearest bin centres with Gaussian weights (sigma ``encoding_sigma``), looked
  up in a table over integer ab values (:func:`encoding_table`) so the pipeline sends K indices and K weights per
  pixel, never a Q-wide one-hot. The loss is the cross-entropy against that encoding, weighted per pixel by class
  rebalancing: w(q) proportional to ((1 - lambda) p~(q) + lambda / Q)^-1 with E_p~[w] = 1, p~ the prior p of the
  bins smoothed with a Gaussian of sigma ``prior_sigma`` in ab, lambda = ``rebalance_lambda`` (0.5), q the pixel's
  nearest bin. The prediction is the annealed mean of the softmax at temperature ``temperature`` (0.38).
* ``regression``: the decoder outputs (a, b) / 100 directly; the loss is the squared error (the paper's baseline,
  which gives greyish, desaturated colours).

The prior p is the paper's: the histogram of the training targets' nearest bins, over up to ``prior_images``
training images spread evenly over the run's training split (as the run sees it: limits and subsets applied),
computed once when the task is built (:func:`empirical_prior`) and saved with the run as
``artifacts/<task>/ab_prior.npy`` beside the bins and the class weights.

Metrics, per pixel at the output resolution then averaged per image: ``acc``, the fraction of pixels whose
predicted ab lies within ``threshold`` (Euclidean ab distance) of the target; ``auc``, the area under that
fraction's curve for thresholds 0 to 150 (the paper's raw accuracy AuC, computed exactly: the mean of
max(0, 1 - d/150)); ``gray_acc`` and ``gray_auc``, what predicting grey (ab = 0) scores on both (the floor: most
pixels of clothes photos are nearly grey, and class rebalancing trades some of these for vivid colours, as the
paper reports). The run's pictures show the grey input, the target and the colourized result.

A greyscale dataset (Fashion-MNIST) has nothing to predict: the task refuses it with one line.

Batch: ``image`` uint8 [B, H, W, 1] (the grey input), ``ab`` f32 [B, h, w, 2] (the target), and for
classification ``bins`` int16 [B, h, w, K] / ``bin_weights`` f32 [B, h, w, K] (the soft encoding, nearest bin
first), ``weight`` f32 [B].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.data import augment, color
from jaxssl.data.sources import read_records
from jaxssl.tasks.base import Batch, Task, check_choice, normalize, weighted_mean
from jaxssl.tasks.decoder import check_width, make_decoder

MODES = ('classification', 'regression')
AB_SCALE = 100.0      # regression outputs (a, b) / AB_SCALE
AUC_MAX = 150.0       # the paper's accuracy curve runs over thresholds 0..150
TABLE_MIN = -128      # the encoding table covers integer a, b in [-128, 127] (sRGB needs [-87, 99] x [-108, 95])
TABLE_SIZE = 256


@functools.lru_cache(maxsize=4)
def ab_bins(bin_size: float = 10.0) -> np.ndarray:
  """float32 [Q, 2]: the centres (multiples of ``bin_size``) of the ab squares some 8-bit sRGB colour falls in, in
  sorted (a, b) order (261 for 10)."""
  lab = color.rgb_to_lab(color.srgb_cube_surface())
  cells = np.unique(np.round(lab[:, 1:] / bin_size).astype(np.int64), axis=0)
  centres = (cells * bin_size).astype(np.float32)
  centres.flags.writeable = False
  return centres


@functools.lru_cache(maxsize=4)
def encoding_table(bin_size: float, neighbours: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
  """The soft encoding of every integer ab in [-128, 127]^2: (bin indices int16 [256, 256, K] nearest first,
  Gaussian weights float32 [256, 256, K] summing to 1)."""
  bins = ab_bins(bin_size)
  k = min(int(neighbours), len(bins))
  grid = np.arange(TABLE_MIN, TABLE_MIN + TABLE_SIZE, dtype=np.float32)
  ab = np.stack(np.meshgrid(grid, grid, indexing='ij'), axis=-1).reshape(-1, 2)
  index = np.empty((len(ab), k), np.int16)
  weight = np.empty((len(ab), k), np.float32)
  for start in range(0, len(ab), 8192):     # 8192 x Q distances at a time
    d2 = np.sum(np.square(ab[start:start + 8192, None, :] - bins[None]), axis=-1)
    near = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(bins) else np.tile(np.arange(k), (len(d2), 1))
    dk = np.take_along_axis(d2, near, axis=1)
    order = np.argsort(dk, axis=1, kind='stable')
    near, dk = np.take_along_axis(near, order, axis=1), np.take_along_axis(dk, order, axis=1)
    w = np.exp(-(dk - dk[:, :1]) / (2.0 * sigma ** 2))    # shifted by the nearest: same ratios, no underflow
    index[start:start + 8192], weight[start:start + 8192] = near, w / w.sum(axis=1, keepdims=True)
  index, weight = index.reshape((TABLE_SIZE, TABLE_SIZE, k)), weight.reshape((TABLE_SIZE, TABLE_SIZE, k))
  index.flags.writeable = weight.flags.writeable = False
  return index, weight


def encode(ab: np.ndarray, bin_size: float, neighbours: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
  """ab [..., 2] -> (bin indices int16 [..., K], weights float32 [..., K]), from :func:`encoding_table` at the
  nearest integer ab."""
  index, weight = encoding_table(float(bin_size), int(neighbours), float(sigma))
  ij = np.clip(np.round(ab).astype(np.int64) - TABLE_MIN, 0, TABLE_SIZE - 1)
  return index[ij[..., 0], ij[..., 1]], weight[ij[..., 0], ij[..., 1]]


@functools.lru_cache(maxsize=4)
def smoothing_matrix(bin_size: float, sigma: float) -> np.ndarray:
  """float32 [Q, Q]: column q spreads bin q's mass over the bins with a Gaussian of ``sigma`` in ab (columns sum
  to 1, so a distribution stays one)."""
  bins = ab_bins(bin_size).astype(np.float64)
  d2 = np.sum(np.square(bins[:, None] - bins[None]), axis=-1)
  g = np.exp(-d2 / (2.0 * sigma ** 2))
  m = (g / g.sum(axis=0, keepdims=True)).astype(np.float32)
  m.flags.writeable = False
  return m


def rebalancing_weights(prior: np.ndarray, smoothing: np.ndarray, mix: float) -> np.ndarray:
  """Zhang et al.'s class weights float32 [Q]: ((1 - mix) * smoothed prior + mix / Q)^-1, scaled so that their
  mean under the smoothed prior is 1."""
  prior = np.asarray(prior, np.float64)
  p = np.asarray(smoothing, np.float64) @ (prior / max(prior.sum(), 1e-12))
  w = 1.0 / ((1.0 - mix) * p + mix / len(p))
  return (w / np.sum(p * w)).astype(np.float32)


def block_mean(x: np.ndarray, stride: int) -> np.ndarray:
  """[B, H, W, C] -> [B, ceil(H/s), ceil(W/s), C]: the mean of every s x s block (edges repeated to fill the last)."""
  if stride == 1:
    return x
  b, h, w, c = x.shape
  ph, pw = -h % stride, -w % stride
  if ph or pw:
    x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
  return x.reshape(b, (h + ph) // stride, stride, (w + pw) // stride, stride, c).mean(axis=(2, 4))


def grey_to_lightness(grey: np.ndarray) -> np.ndarray:
  """uint8 grey [..., 1] -> L [...]."""
  return color.rgb_to_lab(np.repeat(grey, 3, axis=-1))[..., 0]


def empirical_prior(source, num_images: int, stride: int, bin_size: float, chunk: int = 64) -> np.ndarray:
  """float64 [Q]: the fraction of target pixels (ab averaged over ``stride`` blocks, as the task's targets) whose
  nearest bin is each bin, over ``num_images`` records of ``source`` spread evenly over it (all if fewer)."""
  n = len(source)
  indices = np.unique(np.round(np.linspace(0, n - 1, min(int(num_images), n))).astype(np.int64)) if n else []
  counts = np.zeros(len(ab_bins(bin_size)), np.float64)
  for start in range(0, len(indices), chunk):
    images = np.stack([np.asarray(r['image']) for r in read_records(source, indices[start:start + chunk])])
    if images.shape[-1] != 3:
      break   # the task refuses grey data itself, with the reason
    ab = block_mean(color.rgb_to_lab(images)[..., 1:], stride)
    nearest = encode(ab, bin_size, 1, 1.0)[0][..., 0]
    counts += np.bincount(nearest.reshape(-1), minlength=len(counts))
  return counts / max(counts.sum(), 1.0)


@dataclasses.dataclass
class Colorization(Task):
  """Predict the ab chroma of an image from its lightness (module docstring)."""
  draws_pictures: ClassVar[bool] = True
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'colorization'
  mode: str = 'classification'   # 'classification' (quantized ab, rebalanced) | 'regression'
  feature: str | None = None     # the feature the decoder reads; None/'': decoder.default_feature
  output_stride: int = 4         # the prediction's resolution: input size / output_stride
  bin_size: float = 10.0         # classification: side of the ab squares
  neighbours: int = 5            # soft encoding over this many nearest bins (1: hard labels)
  encoding_sigma: float = 5.0
  rebalance: bool = True         # classification: weight pixels by their bin's rarity
  rebalance_lambda: float = 0.5  # weight of the uniform distribution mixed into the smoothed prior
  prior_sigma: float = 5.0       # Gaussian smoothing of the prior, in ab units
  temperature: float = 0.38      # annealed mean of the softmax (1: the mean, -> 0: the mode)
  threshold: float = 10.0        # acc: a pixel counts where the predicted ab is within this distance
  decoder_width: int = 128
  decoder_min_width: int = 32
  flip: bool = False             # train only: random horizontal flip
  prior_images: int = 1000       # classification: the prior's histogram reads this many training images
  # Filled by build_tasks from the run's training split; read once for the prior, then dropped.
  train_source: Any = dataclasses.field(default=None, repr=False, compare=False)

  FROM_DATASET: ClassVar[tuple[str, ...]] = Task.FROM_DATASET + ('train_source',)

  def __post_init__(self):
    check_choice(self.name, 'mode', self.mode, MODES)
    check_width(self.name, self.decoder_width, self.decoder_min_width)
    channels = len(self.mean) if isinstance(self.mean, (tuple, list)) else None
    if channels is not None and channels != 3:
      self._refuse(channels)
    if int(self.output_stride) < 1 or int(self.neighbours) < 1:
      raise ValueError(f"task '{self.name}': output_stride={self.output_stride} and neighbours={self.neighbours} "
                       'must be >= 1')
    for key in ('bin_size', 'encoding_sigma', 'prior_sigma', 'temperature', 'threshold'):
      if float(getattr(self, key)) <= 0 or np.isnan(float(getattr(self, key))):
        raise ValueError(f"task '{self.name}': {key}={getattr(self, key)} must be positive")
    if not 0 < float(self.rebalance_lambda) <= 1 or int(self.prior_images) < 1:
      raise ValueError(f"task '{self.name}': rebalance_lambda={self.rebalance_lambda} must be in (0, 1] and "
                       f'prior_images={self.prior_images} >= 1')
    self._prior = self._class_weight = None
    if self.train_source is not None:
      if self.classification and self.rebalance:
        self.set_prior(empirical_prior(self.train_source, int(self.prior_images), int(self.output_stride),
                                       float(self.bin_size)))
      self.train_source = None   # the prior is held; the source need not travel to grain's worker processes

  def set_prior(self, prior: np.ndarray) -> None:
    """Uses ``prior`` [Q] (the training targets' bin frequencies) for the class rebalancing (tests; a run computes
    it from its training split)."""
    prior = np.asarray(prior, np.float64)
    if prior.shape != (len(self.bins),) or not prior.sum() > 0:
      raise ValueError(f"task '{self.name}': a prior over the {len(self.bins)} ab bins with positive mass, got "
                       f'shape {prior.shape}')
    self._prior = prior / prior.sum()
    self._class_weight = rebalancing_weights(self._prior, smoothing_matrix(float(self.bin_size),
                                                                           float(self.prior_sigma)),
                                             float(self.rebalance_lambda))

  @property
  def class_weight(self) -> np.ndarray:
    """float32 [Q]: each bin's rebalancing weight (ones without rebalancing)."""
    if not (self.classification and self.rebalance):
      return np.ones(len(self.bins), np.float32)
    if self._class_weight is None:
      raise ValueError(f"task '{self.name}' rebalances by the training data's ab prior, and has none: it is built "
                       'with the run\'s training split (jaxssl.tasks.build_tasks(..., train_source=...)), or given '
                       'one with set_prior')
    return self._class_weight

  def artifacts(self) -> dict[str, np.ndarray]:
    """What the classes and their weights are: the bin centres, the prior, the weights."""
    if not self.classification:
      return {}
    out = {'ab_bins.npy': np.array(self.bins)}
    if self.rebalance and self._prior is not None:
      out.update({'ab_prior.npy': self._prior, 'class_weights.npy': self.class_weight})
    return out

  def _refuse(self, channels: int):
    raise ValueError(
        f"task '{self.name}' needs colour (RGB) input: it predicts an image's colours from its lightness, and this "
        f"dataset's images have {channels} channel{'s' if channels != 1 else ''} (Fashion-MNIST is greyscale). "
        'Use a colour dataset: DeepFashion (configs/deepfashion_colorization.py) or a CSV folder of colour images '
        '(--config.data.name=image_csv)')

  @property
  def classification(self) -> bool:
    return self.mode == 'classification'

  @property
  def bins(self) -> np.ndarray:
    return ab_bins(float(self.bin_size))

  def output_hw(self, input_shape) -> tuple[int, int]:
    s = int(self.output_stride)
    return -(-int(input_shape[0]) // s), -(-int(input_shape[1]) // s)

  # ----------------------------------------------------------------------------------------- pipeline

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    images = batch['image']
    if images.shape[-1] != 3:
      self._refuse(images.shape[-1])
    if train and self.flip:
      images = augment.random_flip(images, rng)
    lab = color.rgb_to_lab(images)                                   # float32 [B, H, W, 3]
    ab = block_mean(lab[..., 1:], int(self.output_stride)).astype(np.float32)
    out = {'image': color.lightness_to_gray(lab[..., 0]), 'ab': ab}
    if self.classification:
      out['bins'], out['bin_weights'] = encode(ab, self.bin_size, self.neighbours, self.encoding_sigma)
    return {**out, 'weight': np.asarray(batch['weight'], np.float32)}

  # ---------------------------------------------------------------------------------------------- model

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    if input_shape[-1] != 3:
      self._refuse(input_shape[-1])
    channels = len(self.bins) if self.classification else 2
    return make_decoder(self.name, backbone, input_shape, self.feature, self.output_hw(input_shape), channels,
                        rngs=rngs, width=int(self.decoder_width), min_width=int(self.decoder_min_width))

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    grey = batch['image']
    x = normalize(jnp.broadcast_to(grey, (*grey.shape[:-1], 3)), self.mean, self.std)
    raw = head(backbone(x, train=train, rng=rng))
    if not self.classification:
      return {'ab': raw * AB_SCALE}
    return {'logits': raw, 'class_weight': jnp.asarray(self.class_weight)}

  def predict_ab(self, outputs) -> jax.Array:
    """[B, h, w, 2]: the regression's output, or the annealed mean of the classifier's softmax."""
    if 'ab' in outputs:
      return outputs['ab']
    p = jax.nn.softmax(outputs['logits'].astype(jnp.float32) / float(self.temperature), axis=-1)
    return p @ jnp.asarray(self.bins)

  def loss(self, outputs, batch: Batch):
    weight, target = batch['weight'], batch['ab'].astype(jnp.float32)
    if self.classification:
      logp = jax.nn.log_softmax(outputs['logits'].astype(jnp.float32), axis=-1)
      bins = batch['bins'].astype(jnp.int32)
      picked = jnp.take_along_axis(logp, bins, axis=-1)                      # [B, h, w, K]: a gather, no one-hot
      per_pixel = -jnp.sum(picked * batch['bin_weights'], axis=-1)
      per_pixel = per_pixel * outputs['class_weight'][bins[..., 0]]
    else:
      per_pixel = jnp.sum(jnp.square((outputs['ab'] - target) / AB_SCALE), axis=-1)
    loss = weighted_mean(jnp.mean(per_pixel, axis=(1, 2)), weight)
    dist = jnp.linalg.norm(self.predict_ab(outputs) - target, axis=-1)        # [B, h, w]
    grey = jnp.linalg.norm(target, axis=-1)

    def image_mean(x):
      return weighted_mean(jnp.mean(x.astype(jnp.float32), axis=(1, 2)), weight)

    return loss, {'loss': loss, 'acc': image_mean(dist <= float(self.threshold)),
                  'auc': image_mean(jnp.maximum(0.0, 1.0 - dist / AUC_MAX)),
                  'gray_acc': image_mean(grey <= float(self.threshold)),
                  'gray_auc': image_mean(jnp.maximum(0.0, 1.0 - grey / AUC_MAX))}

  # ------------------------------------------------------------------------------------------- pictures

  def evaluators(self) -> tuple[str, ...]:
    return ('reconstructions',)

  def picture_outputs(self, outputs, batch: Batch) -> dict[str, jax.Array]:
    """The predicted and the target ab, upsampled (bilinear) to the input's size."""
    b, h, w = batch['image'].shape[:3]

    def up(ab):
      return jax.image.resize(ab.astype(jnp.float32), (b, h, w, 2), method='bilinear')

    return {'ab': up(self.predict_ab(outputs)), 'target_ab': up(batch['ab'])}

  def pictures(self, out: dict[str, np.ndarray], batch: Batch) -> dict[str, np.ndarray]:
    """The grey input, the target (its lightness with the target's chroma) and the colourized result."""
    lightness = grey_to_lightness(batch['image'])[..., None]

    def rgb(ab):
      return color.lab_to_rgb(np.concatenate([lightness, ab], axis=-1))

    return {'input': np.repeat(batch['image'] / 255.0, 3, axis=-1), 'target': rgb(out['target_ab']),
            'colourized': rgb(out['ab'])}
