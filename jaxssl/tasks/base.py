"""What every task (supervised or pretext) provides, and how several tasks share one backbone.

A task is three things: a numpy batch transform that runs in the grain pipeline, a head that sits on a
backbone feature, and a pure loss. The trainer knows nothing else about it, so adding a task never touches
the trainer.

Batches. The pipeline yields raw batches ``{'image': uint8 [B,H,W,C], 'label': int [B], 'weight': f32 [B]}``
('label' is absent for unlabeled data; 'weight' is 0 for the padding rows of a final eval batch). Each task
turns that into its own dict of arrays; the trainer feeds ``{task.name: task.transform(...)}``. Every task
batch carries a ``weight`` vector with one entry per example its loss averages over, so losses and metrics
are exact weighted means even with padding.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


class Task(Protocol):
  name: str

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    """Vectorized numpy over the whole batch; deterministic given ``rng``."""

  def make_head(self, backbone: nnx.Module, input_shape: tuple[int, ...], rngs: nnx.Rngs) -> nnx.Module:
    """The head module this task trains on top of ``backbone``."""

  def forward(self, backbone: nnx.Module, head: nnx.Module, batch: Batch, *, train: bool,
              rng: jax.Array | None) -> Any:
    """Outputs of backbone + head for this task's batch."""

  def loss(self, outputs: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
    """Pure: (outputs, batch) -> (weighted-mean scalar loss, weighted-mean metrics)."""


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
  """Mean of per-example ``values`` counting only examples with weight > 0 (padding rows have 0)."""
  return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1e-8)


def normalize(images: jax.Array, mean: float | tuple[float, ...], std: float | tuple[float, ...],
              dtype=jnp.float32) -> jax.Array:
  """uint8 images -> standardized floats. Done on device: moving uint8 costs a quarter of float32."""
  x = images.astype(jnp.float32) / 255.0
  return ((x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)).astype(dtype)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits (ties broken by position, as argsort does)."""
  k = min(k, logits.shape[-1])
  topk = jax.lax.top_k(logits, k)[1]
  return jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)


class LinearHead(nnx.Module):
  """A linear classifier on one named backbone feature (flattened).

  Zero-initialized, as big_vision does: every class starts equally likely (loss = log #classes), so the
  first large-learning-rate steps cannot blow up the backbone through huge random logits.
  """

  def __init__(self, in_features: int, num_outputs: int, *, feature: str, rngs: nnx.Rngs,
               zero_init: bool = True):
    self.feature = feature
    init = nnx.initializers.zeros_init() if zero_init else nnx.initializers.lecun_normal()
    self.dense = nnx.Linear(in_features, num_outputs, kernel_init=init, rngs=rngs)

  def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
    h = features[self.feature]
    return self.dense(h.reshape(h.shape[0], -1).astype(jnp.float32))
