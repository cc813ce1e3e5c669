"""An online linear probe: a classifier of the dataset's labels trained on the frozen backbone while any other
task pretrains it, so every pretraining curve gets a representation-quality curve beside it.

Turned on by one config switch, ``config.online_probe`` (configs/common.py): with ``enabled``,
:func:`jaxssl.tasks.build_tasks` adds this task, named ``probe``, after the run's own tasks, its loss weighted by
``weight``; the switch's other keys are this class's options. It reports ``probe/top1`` (and ``probe/top5``,
``probe/loss``) in every training log row and evaluation, and, with ``knn``, the ``online_knn`` evaluator
(jaxssl/eval/online_knn.py) adds ``probe/knn_top1`` and ``probe/knn_top5`` at every evaluation: the weighted
k-NN vote (Wu et al. 2018) of the eval split among the training split's features of the same layer.

Why it cannot change the pretext run (tested in tests/test_online_probe.py):

* Gradient. The probe reads ``stop_gradient`` of the backbone's features, so the backbone's gradient is exactly
  the pretext tasks' (the probe's path contributes a symbolic zero, not a float sum); only the probe's own head
  learns from the labels.
* BatchNorm. The probe runs the backbone in inference mode (``train=False``): BatchNorm normalizes with its
  running statistics and does not update them, and dropout is off; the pretext tasks' forward passes update the
  statistics exactly as without the probe. The probe thus sees the features an evaluation sees (running
  statistics, no dropout), which is what a linear probe of the checkpoint would measure.
* Randomness. The probe draws nothing and comes last: the pipeline's per-task streams and the step's per-task
  keys of the other tasks are the ones they have without it, and so are the initial parameters.
* Optimizer. The probe's head is one more parameter group of the run's optimizer (its learning rate schedule and
  weight decay): per-parameter updates (SGD, momentum, Adam) leave the backbone's update unchanged. What does
  change: the total ``loss`` (plus ``weight`` x the probe's loss) and ``grad_norm`` (the head's gradient joins
  the global norm), so ``optim.grad_clip_norm > 0`` would clip differently; the pretext configs clip nothing.

Cost: one extra inference-mode forward of the batch's source images per step, and no backward through the
backbone: on configs/fmnist_rotation.py (batch 128, four rotated copies each) 8% more model FLOPs per step (XLA's
cost analysis via ``python -m jaxssl.bench``: 58.1 -> 62.8 GFLOP); the k-NN costs one forward of the training and
eval splits per evaluation. The rotation step's bench against its PyTorch twin should turn the probe off
(``--config.online_probe.enabled=false``): the twin has none.

Input. By default the dataset's images, standardized as every task does. A backbone built for smaller inputs
(the jigsaw's: CifarNet's fully connected layers fix its input size) cannot take whole images: ``crop=c`` feeds
the centred c x c square (the coordinate jigsaw's 24 x 24 layout), and ``tiles=g`` cuts every image into the
jigsaw's ``g x g`` cells and takes each cell's centred tile (the jigsaw's tile size, ``tile_size``/``gap`` as
there), standardized per tile with ``tile_norm``; the image's feature is the tile features concatenated in order.

Scale. The probe shares the run's optimizer and learning rate, while the features of a pretext run change in
magnitude as it trains (unnormalized ReLU maps): on raw CifarNet pool2 features the rotation config's probe loss
reached 36 after 10 steps. With ``norm`` > 0 every feature vector is scaled to that L2 norm first, so the probe's
steps do not depend on the features' magnitude or dimension. The default, 32, learned fastest of those tried on
``fmnist_rotation.py:quick`` cut to 60 steps (probe top-1 at step 60 for norm 1 / 4 / 16 / 32 / raw: 22 / 46 / 67
/ 74 / 70%, raw peaking at a loss of 5 at step 20 and 36 at step 10 of a 20-step run; 2026-11-30, 2-core CPU).
The k-NN uses cosine similarity and is unaffected.

Labels: ``label_key`` ('' = ``label`` where the records have it, else DeepFashion's ``category``); a negative
label (an image without a category) counts with weight 0. A dataset without classes cannot have the probe: the
switch is then refused with one line (it is off by default).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxssl.tasks.base import (POOLS, Batch, LinearHead, Task, check_choice, head_input, normalize, pool_feature,
                               topk_correct, weighted_mean)
from jaxssl.tasks.jigsaw import standardize, tile_geometry

NAME = 'probe'          # the task name the switch adds
LABEL_KEYS = ('label', 'category')
NORM_EPS = 1e-12


def probe_loss(logits: jax.Array, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Pure: softmax cross-entropy of the labels, weighted; ``top1`` and ``top5``."""
  labels, weight = batch['label'], batch['weight']
  loss = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels), weight)
  return loss, {'loss': loss, 'top1': weighted_mean(topk_correct(logits, labels, 1), weight),
                'top5': weighted_mean(topk_correct(logits, labels, 5), weight)}


def label_key(batch, key: str = '') -> str:
  """Which field of a raw batch holds the class labels (``key`` if given)."""
  for k in ((key,) if key else LABEL_KEYS):
    if k in batch:
      return k
  raise ValueError(f"the online probe needs class labels, but the dataset's records have no "
                   f"{' or '.join(repr(k) for k in ((key,) if key else LABEL_KEYS))} field; turn it off with "
                   '--config.online_probe.enabled=false')


@dataclasses.dataclass
class OnlineProbe(Task):
  """A linear classifier of the labels on ``stop_gradient`` of a backbone feature in inference mode."""
  num_classes: int
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = NAME
  feature: str | None = None   # '' or None: the backbone's output_name
  pool: str = 'flatten'        # a spatial feature map -> vector for the linear probe: 'flatten' or 'avg'
  norm: float = 32.0           # > 0: every feature vector scaled to this L2 norm before the linear layer; 0: raw
  label_key: str = ''          # '' = 'label', else 'category'
  crop: int = 0                # c > 0: the centred c x c square of every image (a backbone built for c x c inputs)
  tiles: int = 0               # g > 0: the image as its g x g centred jigsaw tiles (a backbone built for tiles)
  tile_size: int = 0           # as the jigsaw's options (0 / None: its defaults)
  gap: int | None = None
  tile_norm: bool = True       # standardize every tile by its own statistics, as the jigsaw does
  knn: bool = True             # also the weighted k-NN monitor (jaxssl/eval/online_knn.py) at every evaluation
  knn_k: int = 200
  knn_temperature: float = 0.07
  knn_pool: str = 'avg'        # the k-NN's vector (cosine similarity of L2-normalized features)
  knn_train_limit: int = 0     # > 0: only the first N training records vote (0: the whole training split)

  # The backbone runs in inference mode without gradients: with optim.trainable='heads' the probe is as frozen
  # as a linear-probe task must be, and beside a pretext task it never counts as the task that trains it.
  freeze_backbone = True

  def __post_init__(self):
    if int(self.num_classes) < 1:
      raise ValueError(f"task '{self.name}': the dataset has no class labels, so there is nothing to probe; turn "
                       'the online probe off (--config.online_probe.enabled=false)')
    check_choice(self.name, 'pool', self.pool, POOLS)
    check_choice(self.name, 'knn_pool', self.knn_pool, POOLS)
    if self.label_key and self.label_key not in LABEL_KEYS:
      raise ValueError(f"task '{self.name}': unknown label_key '{self.label_key}'; choose '' (automatic) or one of: "
                       f"{', '.join(LABEL_KEYS)}")
    if int(self.tiles) < 0 or int(self.tiles) == 1 or int(self.crop) < 0 or (self.tiles and self.crop):
      raise ValueError(f"task '{self.name}': tiles={self.tiles} must be 0 (whole images) or a grid of at least 2, "
                       f'crop={self.crop} 0 (whole images) or a size; not both')
    if int(self.knn_k) <= 0 or self.knn_temperature <= 0 or int(self.knn_train_limit) < 0:
      raise ValueError(f"task '{self.name}': knn_k={self.knn_k} and knn_temperature={self.knn_temperature} must be "
                       f'positive, knn_train_limit={self.knn_train_limit} >= 0')

  def evaluators(self) -> tuple[str, ...]:
    return ('online_knn',) if self.knn else ()

  # ---------------------------------------------------------------------------------------- features

  def input_shape(self, dataset_shape) -> tuple[int, ...]:
    """What one input to the backbone looks like: the image, or one tile of it."""
    if self.crop:
      if int(self.crop) > min(dataset_shape[:2]):
        raise ValueError(f"task '{self.name}': crop={self.crop} is larger than the images, {tuple(dataset_shape)}")
      return (int(self.crop), int(self.crop), *tuple(dataset_shape)[2:])
    if not self.tiles:
      return tuple(dataset_shape)
    t = tile_geometry(dataset_shape, int(self.tiles), int(self.tile_size or 0), self.gap).tile
    return (t, t, *tuple(dataset_shape)[2:])

  def _inputs(self, images: jax.Array) -> jax.Array:
    """uint8 [B, H, W, C] -> the backbone's inputs, [B, ...] or [B*T, t, t, C] (tiles image-major)."""
    if self.crop:
      c, (h, w) = int(self.crop), images.shape[1:3]
      images = images[:, (h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
    if not self.tiles:
      return normalize(images, self.mean, self.std)
    geo = tile_geometry(images.shape[1:], int(self.tiles), int(self.tile_size or 0), self.gap)
    g, t = geo.grid, geo.tile
    slack_y, slack_x = geo.slack
    tiles = []
    for k in range(g * g):   # every cell's centred tile, row-major: static slices
      y = geo.origin[0] + (k // g) * geo.cell[0] + slack_y // 2
      x = geo.origin[1] + (k % g) * geo.cell[1] + slack_x // 2
      tiles.append(images[:, y:y + t, x:x + t])
    x = jnp.stack(tiles, axis=1).reshape(-1, t, t, images.shape[-1])
    if self.tile_norm:
      return standardize(x.astype(jnp.float32) / 255.0, axes=(1, 2, 3))
    return normalize(x, self.mean, self.std)

  def embed(self, backbone, images: jax.Array, pool: str | None = None) -> jax.Array:
    """float32 [B, D]: the probed feature of uint8 images, the backbone in inference mode, no gradient."""
    feature = self.feature or backbone.output_name
    h = backbone(self._inputs(images), train=False, rng=None)[feature]
    h = pool_feature(h, pool or self.pool).reshape(images.shape[0], -1).astype(jnp.float32)
    return jax.lax.stop_gradient(h)

  # ----------------------------------------------------------------------------------------- the contract

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    del rng, train   # the probe sees the records as they are: no augmentation, no draws
    labels = np.asarray(batch[label_key(batch, self.label_key)]).astype(np.int32)
    weight = np.asarray(batch['weight'], np.float32) * (labels >= 0)
    return {'image': batch['image'], 'label': np.maximum(labels, 0), 'weight': weight}

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    shape = self.input_shape(input_shape)
    _, in_features, _ = head_input(backbone, shape, self.feature, self.name, self.pool)
    return LinearHead(in_features * max(1, int(self.tiles)) ** 2, int(self.num_classes), feature=NAME, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    del train, rng   # inference mode whatever the phase: see the module docstring
    h = self.embed(backbone, batch['image'])
    if self.norm:
      h = h * (self.norm * jax.lax.rsqrt(jnp.sum(jnp.square(h), axis=-1, keepdims=True) + NORM_EPS))
    return head({NAME: h})

  def loss(self, outputs: jax.Array, batch: Batch):
    return probe_loss(outputs, batch)
