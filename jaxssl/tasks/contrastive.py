"""Instance discrimination from two random views of every image: SimCLR (Chen, Kornblith, Norouzi & Hinton,
ICML 2020), and what BYOL (jaxssl/tasks/byol.py) shares with it.

The views are made in the grain pipeline (jaxssl/data/views.py: random resized crop, flip, colour or intensity
jitter, grayscale, blur, solarization; each an option below). The backbone encodes both views, a projector MLP maps
the representation to the space the loss compares in, and NT-Xent asks every view to pick its partner among all
the other views of the batch.

Negatives come from the whole global batch: the train step is one program over global arrays (jaxssl/train/step.py
jits it over the device mesh), so the similarity matrix below spans every device's rows, and 8 devices give the
loss of one (tested). Evaluation draws views too (seeded per eval batch, so the figure is reproducible); the eval
loss and ``acc`` depend on ``eval_batch_size``, which sets the number of candidates.

Batch layout: ``image`` uint8 [B, 2, S, S, C] (the two views of each image), ``weight`` f32 [B]. The example axis
stays first, so the batch shards like any other; the views are folded into it on device.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.data import views as views_lib
from jaxssl.tasks.base import POOLS, Batch, Task, check_choice, head_input, normalize, pool_feature, weighted_mean


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows scaled to unit length; a zero row stays zero (and its gradient finite)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float, weight: jax.Array) -> tuple[jax.Array, dict]:
  """SimCLR's loss over N pairs of projections ``z1[i]``, ``z2[i]`` [N, D]: each of the 2N views is an anchor
  whose positive is its partner and whose negatives are the other 2N - 2 views; the loss is the softmax
  cross-entropy of cosine similarities / ``temperature`` picking the positive, a mean over anchors weighted by
  ``weight`` [N] (a padding row, weight 0, is neither an anchor nor a negative).

  Returns ``(loss, {'loss', 'acc'})``, ``acc`` the fraction of anchors whose most similar candidate is their
  partner (chance 1 / (2N - 1)).
  """
  n = z1.shape[0]
  z = l2_normalize(jnp.concatenate([z1, z2]).astype(jnp.float32))
  logits = z @ z.T / temperature                                  # [2N, 2N]
  w = jnp.concatenate([weight, weight]).astype(jnp.float32)
  idx = jnp.arange(2 * n)
  positive = (idx + n) % (2 * n)
  is_positive = idx[None, :] == positive[:, None]
  candidate = ((w[None, :] > 0) & (idx[None, :] != idx[:, None])) | is_positive
  logits = jnp.where(candidate, logits, -jnp.inf)
  pos_logit = jnp.sum(jnp.where(is_positive, logits, 0.0), axis=1)
  per_anchor = jax.nn.logsumexp(logits, axis=1) - pos_logit
  loss = weighted_mean(per_anchor, w)
  correct = (jnp.argmax(logits, axis=1) == positive).astype(jnp.float32)
  return loss, {'loss': loss, 'acc': weighted_mean(correct, w)}


class MLP(nnx.Module):
  """Linear -> BatchNorm -> ReLU -> Linear: SimCLR's projector (its v1 code normalizes the hidden layer too),
  BYOL's projector and predictor."""

  def __init__(self, in_features: int, hidden: int, out_features: int, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(in_features, hidden, use_bias=False, rngs=rngs)   # BatchNorm brings the shift
    self.norm = nnx.BatchNorm(hidden, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.out = nnx.Linear(hidden, out_features, rngs=rngs)

  def __call__(self, h: jax.Array, *, train: bool) -> jax.Array:
    return self.out(jax.nn.relu(self.norm(self.hidden(h), use_running_average=not train)))


@dataclasses.dataclass
class TwoViews(Task):  # pylint: disable=abstract-method  # a base: SimCLR and BYOL add the head and loss
  """Base of SimCLR and BYOL: the two views (options per view where the recipes make them differ), the encoder
  (one backbone feature, pooled, flattened) and the projector's size."""
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'two_views'
  feature: str | None = None                       # the representation: None = the backbone's output_name
  pool: str = 'flatten'                            # 'avg' pools a spatial feature first
  crop_size: int = 0                               # the views' side in pixels (0: the image's height)
  crop_scale: tuple[float, float] = (0.08, 1.0)    # random resized crop: area fraction
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # and aspect ratio
  flip: float = 0.5
  jitter_prob: float = 0.8                         # colour jitter (intensity jitter for one channel)
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.4                          # colour only
  hue: float = 0.1                                 # colour only
  grayscale_prob: float = 0.2                      # colour only
  blur_prob: tuple[float, float] = (0.0, 0.0)      # per view
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  solarize_prob: tuple[float, float] = (0.0, 0.0)  # per view
  proj_hidden: int = 512
  proj_dim: int = 128

  def __post_init__(self):
    check_choice(self.name, 'pool', self.pool, POOLS)
    for key in ('crop_scale', 'crop_ratio', 'blur_prob', 'blur_sigma', 'solarize_prob'):
      value = tuple(float(v) for v in getattr(self, key))
      if len(value) != 2:
        raise ValueError(f"task '{self.name}': {key} takes two numbers, got {getattr(self, key)!r}")
      setattr(self, key, value)
    if min(self.proj_hidden, self.proj_dim) < 1:
      raise ValueError(f"task '{self.name}': proj_hidden and proj_dim must be >= 1")
    for augment in self.augments():
      augment.check(f"task '{self.name}'")

  def augments(self) -> tuple[views_lib.ViewAugment, views_lib.ViewAugment]:
    """How each of the two views is drawn."""
    return tuple(views_lib.ViewAugment(
        size=self.crop_size, scale=self.crop_scale, ratio=self.crop_ratio, flip=self.flip, jitter=self.jitter_prob,
        brightness=self.brightness, contrast=self.contrast, saturation=self.saturation, hue=self.hue,
        grayscale=self.grayscale_prob, blur=self.blur_prob[v], blur_sigma=self.blur_sigma,
        solarize=self.solarize_prob[v]) for v in range(2))

  def backbone_input_shape(self, dataset_shape) -> tuple[int, ...]:
    h, w, c = dataset_shape
    return (self.crop_size, self.crop_size, c) if self.crop_size else (h, w, c)

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    """Two views of every image, at evaluation too (the task is defined by them; ``rng`` is seeded per batch)."""
    del train
    return {'image': views_lib.make_views(batch['image'], rng, self.augments()),
            'weight': np.asarray(batch['weight'], np.float32)}

  def representation(self, backbone, input_shape) -> tuple[str, int]:
    """The backbone feature the heads read and its size (pooled, flattened)."""
    feature, in_features, _ = head_input(backbone, self.backbone_input_shape(input_shape), self.feature, self.name,
                                         self.pool)
    return feature, in_features

  def encode(self, backbone, feature: str, images: jax.Array, *, train: bool, rng) -> jax.Array:
    """uint8 [B, V, S, S, C] -> float32 [B * V, F]: every view's representation (the views of an image
    adjacent)."""
    b, v = images.shape[:2]
    x = normalize(images.reshape(b * v, *images.shape[2:]), self.mean, self.std)
    h = pool_feature(backbone(x, train=train, rng=rng)[feature], self.pool)
    return h.reshape(b * v, -1).astype(jnp.float32)


class ProjectionHead(nnx.Module):
  """SimCLR's head: which backbone feature it reads, and the projector."""

  def __init__(self, feature: str, in_features: int, hidden: int, out_features: int, *, rngs: nnx.Rngs):
    self.feature = feature
    self.projector = MLP(in_features, hidden, out_features, rngs=rngs)


@dataclasses.dataclass
class SimCLR(TwoViews):
  """NT-Xent between the projections of two views of every image, the rest of the batch as negatives."""
  name: str = 'simclr'
  temperature: float = 0.5                         # SimCLR's CIFAR-10 setting
  min_batch: ClassVar[int] = 2                     # the other images of the batch are the negatives

  def __post_init__(self):
    super().__post_init__()
    if not self.temperature > 0:
      raise ValueError(f"task '{self.name}': temperature must be > 0, got {self.temperature}")

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    feature, in_features = self.representation(backbone, input_shape)
    return ProjectionHead(feature, in_features, self.proj_hidden, self.proj_dim, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    b = batch['image'].shape[0]
    h = self.encode(backbone, head.feature, batch['image'], train=train, rng=rng)
    return head.projector(h, train=train).reshape(b, 2, -1)

  def loss(self, z: jax.Array, batch: Batch):
    return nt_xent(z[:, 0], z[:, 1], self.temperature, batch['weight'])
