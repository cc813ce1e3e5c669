"""Supervised classification: the baseline every pretext task is compared against, and the probe's loss."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
from flax import nnx

from jaxssl.data import augment
from jaxssl.tasks.base import (POOLS, Batch, LinearHead, Task, check_choice, head_input, normalize, pool_feature,
                               topk_correct, weighted_mean)


@dataclasses.dataclass
class Classification(Task):
  """Softmax classification of the dataset's labels from one backbone feature."""
  num_classes: int
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'classify'
  feature: str | None = None          # None: the backbone's output_name
  crop_padding: int = 0               # random crop with this zero padding when training
  flip: bool = False                  # random horizontal flip when training
  label_smoothing: float = 0.0
  topk: tuple[int, ...] = (1, 3, 5)
  # Transfer (linear probe): the backbone runs in inference mode (BatchNorm statistics untouched) and no
  # gradient flows into it, so the probe costs one forward and trains only the head.
  freeze_backbone: bool = False
  pool: str = 'flatten'               # a spatial feature map -> vector: 'flatten' or 'avg' (global average)

  predicts_classes = True

  def __post_init__(self):
    if int(self.num_classes) < 1:  # else a head of 0 outputs, and a loss of nothing
      raise ValueError(f"task '{self.name}': the dataset has no class labels to classify; use a labelled dataset, "
                       'or a pretext task (rotation, jigsaw, simclr, ...)')
    check_choice(self.name, 'pool', self.pool, POOLS)

  def evaluators(self) -> tuple[str, ...]:
    # A linear probe also draws what it sees: the probed layer's embedding.
    return ('confusion', 'embedding') if self.freeze_backbone else ('confusion',)

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    if 'label' not in batch:
      raise ValueError(f"task '{self.name}' needs labels, but the dataset gave none")
    images = batch['image']
    if train:
      images = augment.random_crop(images, rng, self.crop_padding)
      if self.flip:
        images = augment.random_flip(images, rng)
    return {'image': images, 'label': batch['label'].astype(np.int32), 'weight': batch['weight']}

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    feature, in_features, _ = head_input(backbone, input_shape, self.feature, self.name, self.pool)
    return LinearHead(in_features, self.num_classes, feature=feature, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    x = normalize(batch['image'], self.mean, self.std)
    if self.freeze_backbone:
      features = jax.lax.stop_gradient(backbone(x, train=False, rng=None))
    else:
      features = backbone(x, train=train, rng=rng)
    return head({head.feature: pool_feature(features[head.feature], self.pool)})

  def loss(self, logits: jax.Array, batch: Batch):
    labels, weight = batch['label'], batch['weight']
    targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes), self.label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    metrics = {f'top{k}': weighted_mean(topk_correct(logits, labels, k), weight) for k in self.topk}
    loss = weighted_mean(losses, weight)
    return loss, {'loss': loss, **metrics}
