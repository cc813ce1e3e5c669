"""Category and attribute prediction with one network: a shared backbone, a softmax category head and a sigmoid
attribute head (the DeepFashion category and attribute model; kind ``category_attributes``, formerly
``multitask``, which still works).

Loss = ``category_weight`` x softmax cross-entropy of the category + ``attribute_weight`` x the mean over
attributes of the binary cross-entropy of each attribute's sigmoid. With ``pos_weight`` the positive term of
attribute a is scaled by p_a = (1 - f_a) / f_a (``balanced``: positives and negatives weigh the same in total)
or its square root (``sqrt``), f_a being the fraction of training images with a; capped at ``pos_weight_max``.
Rare attributes (most of DeepFashion's 1,000 occur on under 1% of images) would otherwise be learned as
"never". The attribute bias starts at the log-odds that minimizes this loss for the training frequencies, so
the first steps are not spent learning base rates.

Datasets without categories (the attribute-challenge sample) get no category head: the task runs
attribute-only and ``category_weight`` is ignored. Examples without a category (-1) or without attribute labels
(``has_attributes`` 0) are left out of that part of the loss.

Training crop (``crop='short_side'``): a square of the image's shorter side at a random position, resized to
``crop_size`` (the seed experiments' AlexNet recipe), plus a random horizontal flip; at evaluation the centred
square. Images are stored resized to a square (see jaxssl/data/deepfashion.py), so the crop is a box computed
from the original size and cut and resized on device. ``crop='full'``: the whole stored image.

Metrics (exact split means: the category metrics over the images with a category, the attribute metrics over those
with attribute labels): ``category_loss``, ``attribute_loss``, ``top1/3/5`` (category), ``mean_sample_f1`` (the
competition's mean F1, each sample's F1 at threshold 0.5, averaged) and ``attribute_acc`` (fraction of the A
decisions right). Macro F1, top-k recall and the threshold chosen on the validation split come from
jaxssl/eval/attributes.py after training.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxssl.data import augment
from jaxssl.tasks import attribute_metrics
from jaxssl.tasks.base import (POOLS, Batch, Task, check_choice, head_input, mean_of, normalize, pool_feature,
                               topk_correct, weighted_mean)

POS_WEIGHTS = ('none', 'balanced', 'sqrt')
CROPS = ('short_side', 'full')
_MIN_FREQUENCY = 1e-4  # an attribute never seen in training still gets a finite weight and bias


class MultiTaskHead(nnx.Module):
  """Two linear heads on one backbone feature; the category head exists only when there are categories."""

  def __init__(self, in_features: int, num_classes: int, num_attributes: int, *, feature: str,
               attribute_bias: np.ndarray, rngs: nnx.Rngs):
    self.feature = feature
    zeros = nnx.initializers.zeros_init()
    self.category = nnx.Linear(in_features, num_classes, kernel_init=zeros, rngs=rngs) if num_classes else None
    self.attributes = nnx.Linear(in_features, num_attributes, kernel_init=zeros, rngs=rngs)
    self.attributes.bias[...] = jnp.asarray(attribute_bias, jnp.float32)

  def __call__(self, h: jax.Array) -> dict[str, jax.Array]:
    h = h.reshape(h.shape[0], -1).astype(jnp.float32)
    out = {'attributes': self.attributes(h)}
    if self.category is not None:
      out['category'] = self.category(h)
    return out


@dataclasses.dataclass
class CategoryAttributes(Task):
  """Softmax category + sigmoid attributes on one shared backbone feature."""
  num_classes: int                     # categories, from the dataset (0: attribute-only)
  num_attributes: int                  # from the dataset
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  attribute_frequency: tuple[float, ...] = ()  # from the dataset: training fraction of positives per attribute
  name: str = 'multitask'
  feature: str | None = None           # None: the backbone's output_name
  pool: str = 'flatten'                # a spatial feature map -> vector: 'flatten' or 'avg'
  category_weight: float = 1.0
  attribute_weight: float = 1.0
  pos_weight: str = 'none'             # 'none' | 'balanced' | 'sqrt' (see the module docstring)
  pos_weight_max: float = 50.0
  crop: str = 'short_side'             # 'short_side' | 'full'
  crop_size: int = 0                   # network input size; 0: the stored image size
  flip: bool = True                    # random horizontal flip when training
  topk: tuple[int, ...] = (1, 3, 5)

  def __post_init__(self):
    for what, value, choices in (('pos_weight', self.pos_weight, POS_WEIGHTS), ('crop', self.crop, CROPS),
                                 ('pool', self.pool, POOLS)):
      check_choice(self.name, what, value, choices)
    if self.num_attributes <= 0:
      raise ValueError(f"task '{self.name}' needs a dataset with attributes (deepfashion, deepfashion_attr, "
                       'image_csv); this one has none')

  # ------------------------------------------------------------------------------------------- weighting

  def frequencies(self) -> np.ndarray:
    if len(self.attribute_frequency) == self.num_attributes:
      f = np.asarray(self.attribute_frequency, np.float64)
    else:
      f = np.full(self.num_attributes, 0.5)  # unknown: no weighting, zero bias
    return np.clip(f, _MIN_FREQUENCY, 1 - _MIN_FREQUENCY)

  def positive_weights(self) -> np.ndarray:
    f = self.frequencies()
    ratio = (1 - f) / f
    w = {'none': np.ones_like(f), 'balanced': ratio, 'sqrt': np.sqrt(ratio)}[self.pos_weight]
    return np.minimum(w, self.pos_weight_max).astype(np.float32)

  def initial_attribute_bias(self) -> np.ndarray:
    """argmin over b of the (weighted) BCE at frequency f: sigmoid(b) = p f / (p f + 1 - f)."""
    f, p = self.frequencies(), self.positive_weights()
    return np.log(p * f / (1 - f)).astype(np.float32)

  # ------------------------------------------------------------------------------------------- protocol

  def evaluators(self) -> tuple[str, ...]:
    return ('attributes',)

  def out_size(self, dataset_shape) -> int:
    return int(self.crop_size or dataset_shape[0])

  def backbone_input_shape(self, dataset_shape) -> tuple[int, ...]:
    s = self.out_size(dataset_shape)
    return (s, s, dataset_shape[-1])

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    if 'attributes' not in batch:
      raise ValueError(f"task '{self.name}' needs attribute labels, but the dataset gave none; use a DeepFashion "
                       'dataset (--config.data.name=deepfashion, deepfashion_attr or image_csv)')
    images, weight = batch['image'], np.asarray(batch['weight'], np.float32)
    if train and self.flip:
      images = augment.random_flip(images, rng)
    stored = images.shape[1:3]
    hw = batch.get('image_hw', np.tile(np.asarray(stored), (len(images), 1)))
    if self.crop == 'short_side':
      boxes = augment.short_side_boxes(hw, stored, rng if train else None)
    else:
      boxes = np.tile(np.asarray([0, 0, *stored], np.float32), (len(images), 1))
    category = np.asarray(batch.get('category', np.full(len(images), -1)))
    has_attributes = np.asarray(batch.get('has_attributes', np.ones(len(images))), np.float32)
    out = {'image': images, 'box': boxes, 'attributes': np.asarray(batch['attributes'], np.uint8),
           'category': np.maximum(category, 0).astype(np.int32),
           'category_weight': weight * (category >= 0), 'attribute_weight': weight * has_attributes,
           'weight': weight}
    if 'index' in batch:  # predictions name each record's file
      out['index'] = np.asarray(batch['index'], np.int32)
    return out

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    feature, in_features, _ = head_input(backbone, self.backbone_input_shape(input_shape), self.feature,
                                         self.name, self.pool)
    return MultiTaskHead(in_features, self.num_classes, self.num_attributes, feature=feature,
                         attribute_bias=self.initial_attribute_bias(), rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    x = normalize(batch['image'], self.mean, self.std)
    size = self.out_size(batch['image'].shape[1:])
    if self.crop != 'full' or size != x.shape[1] or size != x.shape[2]:
      x = augment.crop_resize(x, batch['box'], size)
    features = backbone(x, train=train, rng=rng)
    return head(pool_feature(features[head.feature], self.pool))

  def loss(self, outputs: dict[str, jax.Array], batch: Batch):
    logits, y = outputs['attributes'], batch['attributes'].astype(jnp.float32)
    pw = jnp.asarray(self.positive_weights())
    bce = jnp.mean(-(pw * y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits)), axis=-1)
    attr_weight = batch['attribute_weight']
    attribute_loss = weighted_mean(bce, attr_weight)
    pred = (logits > 0).astype(jnp.float32)   # probability >= 0.5
    metrics = {'attribute_loss': mean_of(bce, attr_weight),
               'mean_sample_f1': mean_of(attribute_metrics.per_sample_f1(pred, y), attr_weight),
               'attribute_acc': mean_of(jnp.mean(pred == y, axis=-1), attr_weight)}
    loss = self.attribute_weight * attribute_loss
    if 'category' in outputs:
      cat_logits, labels, cat_weight = outputs['category'], batch['category'], batch['category_weight']
      ce = optax.softmax_cross_entropy_with_integer_labels(cat_logits, labels)
      loss = loss + self.category_weight * weighted_mean(ce, cat_weight)
      metrics['category_loss'] = mean_of(ce, cat_weight)
      metrics.update({f'top{k}': mean_of(topk_correct(cat_logits, labels, k), cat_weight) for k in self.topk})
    return loss, {'loss': loss, **metrics}
