"""Rotation prediction (RotNet; Gidaris, Singh & Komodakis, ICLR 2018).

Every image of the batch appears in each of the rotations ``angles`` (multiples of 90 degrees: exact, no
interpolation) and the network predicts which rotation it sees. The dataset's labels are ignored, so the task
runs on unlabeled images.

Batch layout: ``image`` uint8 [B, R, H, W, C], ``label`` int32 [B, R] (the index into ``angles``), ``weight``
f32 [B, R]. The example axis stays first, so the batch shards over devices like any other; the R rotations
of an image are folded into the batch axis on device.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxssl.data import augment
from jaxssl.tasks.base import Batch, LinearHead, Task, head_input, mean_of, normalize, weighted_mean


def rotate_batch(images: np.ndarray, quarter_turns) -> np.ndarray:
  """[B, H, W, C] -> [B, R, H, W, C]: every image rotated counter-clockwise by each k * 90 degrees."""
  return np.stack([np.rot90(images, k, axes=(1, 2)) for k in quarter_turns], axis=1)


@dataclasses.dataclass
class Rotation(Task):
  """Classify which of ``angles`` an image was rotated by."""
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'rotation'
  angles: tuple[int, ...] = (0, 90, 180, 270)   # degrees, multiples of 90; the label is the index
  feature: str | None = None                     # None: the backbone's output_name
  crop_padding: int = 0                          # random crop with zero padding before rotating (train only)
  flip: bool = False                             # random horizontal flip before rotating (train only)

  def __post_init__(self):
    try:
      angles = tuple(int(a) for a in self.angles)
    except (TypeError, ValueError) as e:
      raise ValueError(f"task '{self.name}': angles must be a list of multiples of 90 degrees, got "
                       f'{self.angles!r}') from e
    if not angles or any(a % 90 for a in angles):
      raise ValueError(f"task '{self.name}': angles must be multiples of 90 degrees, got {self.angles}")
    if len({a % 360 for a in angles}) != len(angles):
      raise ValueError(f"task '{self.name}': angles {self.angles} repeat a rotation (they are taken mod 360)")
    self.angles = angles

  @property
  def quarter_turns(self) -> tuple[int, ...]:
    return tuple((a // 90) % 4 for a in self.angles)

  @property
  def num_outputs(self) -> int:
    return len(self.angles)

  def _check_square(self, shape) -> None:
    h, w = shape[:2]
    if h != w and any(k % 2 for k in self.quarter_turns):
      raise ValueError(f"task '{self.name}': rotating by 90 or 270 degrees needs square images, got {h}x{w}; "
                       'crop them square or use angles=(0, 180)')

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    images = batch['image']
    self._check_square(images.shape[1:])
    if train:
      images = augment.random_crop(images, rng, self.crop_padding)
      if self.flip:
        images = augment.random_flip(images, rng)
    b, r = images.shape[0], len(self.angles)
    return {'image': rotate_batch(images, self.quarter_turns),
            'label': np.broadcast_to(np.arange(r, dtype=np.int32), (b, r)).copy(),
            'weight': np.repeat(np.asarray(batch['weight'], np.float32)[:, None], r, axis=1)}

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    self._check_square(input_shape)
    feature, in_features, _ = head_input(backbone, input_shape, self.feature, self.name)
    return LinearHead(in_features, self.num_outputs, feature=feature, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    images = batch['image']                                   # [B, R, H, W, C]
    b, r = images.shape[:2]
    x = normalize(images.reshape(b * r, *images.shape[2:]), self.mean, self.std)
    logits = head(backbone(x, train=train, rng=rng))
    return logits.reshape(b, r, -1)

  def loss(self, logits: jax.Array, batch: Batch):
    labels, weight = batch['label'].reshape(-1), batch['weight'].reshape(-1)
    logits = logits.reshape(labels.shape[0], -1)
    loss = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), weight)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    metrics = {'loss': loss, 'acc': weighted_mean(correct, weight)}
    for i, angle in enumerate(self.angles):  # per angle: a mean over that angle's examples
      metrics[f'acc_{angle}'] = mean_of(correct, weight * (labels == i))
    return loss, metrics
