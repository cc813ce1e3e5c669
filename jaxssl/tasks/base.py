"""The task contract: what every task (supervised or pretext) provides, with every optional member's default.

A task is three things: a numpy batch transform that runs in the grain pipeline, a head that sits on a
backbone feature, and a pure loss. The trainer knows nothing else about it, so adding a task never touches
the trainer: subclass :class:`Task` as a dataclass, implement the four required methods, and add one line to
the registry in ``jaxssl/tasks/__init__.py``.

Batches. The pipeline yields raw batches ``{'image': uint8 [B,H,W,C], 'label': int [B], 'weight': f32 [B]}``
('label' is absent for unlabeled data; 'weight' is 0 for the padding rows of a final eval batch). Each task
turns that into its own dict of arrays; the trainer feeds ``{task.name: task.transform(...)}``. Every task
batch carries a ``weight`` vector with one entry per example its loss averages over.

Metrics. ``loss`` returns ``(scalar, metrics)``. A metric is either a scalar, read as a mean over the task
batch's examples (weighted by ``weight``), or a ``(total, count)`` pair from :func:`mean_of`, for metrics
averaged over other examples (the category metrics of a dataset where some images have no category). Both are
summed over an evaluation as (sum, normalizer) pairs, so every metric is an exact mean over the split.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.models import feature_shapes

Batch = dict[str, Any]
Metrics = dict[str, Any]   # name -> scalar (a mean over the batch's weight) or a (total, count) pair

POOLS = ('flatten', 'avg')


class Task:
  """Base of every task. Subclasses are dataclasses; the options a config gives are their fields.

  Required: ``name`` (a field), :meth:`transform`, :meth:`make_head`, :meth:`forward`, :meth:`loss`.
  Optional members below have the defaults shown.
  """

  name: str
  # Fields filled from the dataset rather than the config (a subclass declares those it needs as fields).
  FROM_DATASET: ClassVar[tuple[str, ...]] = ('num_classes', 'mean', 'std', 'num_attributes', 'attribute_frequency')
  # The backbone runs in inference mode without gradients (a linear probe); the optimizer must then freeze it.
  freeze_backbone: bool = False
  # True where ``forward`` returns logits over the dataset's classes (confusion matrices, per-class accuracy).
  predicts_classes: ClassVar[bool] = False
  # True where the task draws a picture grid at evaluations (jaxssl/eval/reconstructions.py) through
  # :meth:`picture_outputs` and :meth:`pictures`.
  draws_pictures: ClassVar[bool] = False
  # The smallest global batch the task's loss means something on (SimCLR: an image's negatives are the rest of
  # the batch, so one image gives loss 0 and accuracy 1); checked with the config, before anything is built.
  min_batch: ClassVar[int] = 1

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    """Vectorized numpy over the whole batch; deterministic given ``rng``.

    Every draw is per row: ``rng.integers``, ``random``, ``uniform`` or ``normal`` with a size whose first
    dimension is the batch's rows, and bounds shared by the rows (scalars, or arrays over the trailing axes).
    The pipeline's ``rng`` (jaxssl/data/pipeline.py RowGenerator) makes each draw for the whole global batch and
    keeps this process's rows, so that a run is the same on any number of devices and processes; it refuses any
    other draw."""
    raise NotImplementedError

  def make_head(self, backbone: nnx.Module, input_shape: tuple[int, ...], rngs: nnx.Rngs) -> nnx.Module:
    """The head module this task trains on top of ``backbone`` (``input_shape``: the dataset's image shape)."""
    raise NotImplementedError

  def forward(self, backbone: nnx.Module, head: nnx.Module, batch: Batch, *, train: bool,
              rng: jax.Array | None) -> Any:
    """Outputs of backbone + head for this task's batch."""
    raise NotImplementedError

  def loss(self, outputs: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
    """Pure: (outputs, batch) -> (weighted-mean scalar loss, metrics)."""
    raise NotImplementedError

  # ------------------------------------------------------------------------------------ optional members

  def backbone_input_shape(self, dataset_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one input this task feeds the backbone (jigsaw: a tile; a crop size): by default the
    dataset's image shape."""
    return tuple(dataset_shape)

  def artifacts(self) -> dict[str, np.ndarray]:
    """Arrays the task is defined by (the jigsaw's permutation set), saved with the run as
    ``artifacts/<task>/<name>.npy``."""
    return {}

  def evaluators(self) -> tuple[str, ...]:
    """Evaluators (jaxssl/eval) this task adds to a run's defaults, by registry name."""
    return ()

  def picture_outputs(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
    """Where ``draws_pictures``: on device, per example, what the picture grid needs of ``forward``'s outputs."""
    del outputs, batch
    return {}

  def pictures(self, out: dict[str, np.ndarray], batch: Batch) -> dict[str, np.ndarray]:
    """Where ``draws_pictures``: on the host, the grid's columns, ``{name: images [N, H, W, C] in [0, 1]}``."""
    del out, batch
    return {}

  def update_state(self, backbone: nnx.Module, head: nnx.Module, *, step: jax.Array, total_steps: int) -> None:
    """Updates the task's state at the start of every training step; by default there is none.

    A task's state is the variables of its head that are not ``nnx.Param`` (a BYOL target network, a queue of
    negatives): they live in the train state's ``model_state`` beside the BatchNorm statistics, so they are
    checkpointed, restored, evaluated and rolled back after a non-finite step with the model, and the optimizer
    never sees them. The jitted train step calls this (only where a task overrides it) on the model with the
    step's parameters, before the loss, so the forward sees the result: mutate the head's state variables in
    place. ``step`` is the step about to run (0 first; traced), ``total_steps`` the run's length (0 if unknown).
    A state that a forward pass changes (a queue) may instead be written in :meth:`forward` with ``train=True``,
    as BatchNorm writes its statistics."""
    del backbone, head, step, total_steps


# --------------------------------------------------------------------------------------------- helpers


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
  """Mean of per-example ``values`` counting only examples with weight > 0 (padding rows have 0)."""
  return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1e-8)


def mean_of(values: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A metric as a ``(total, count)`` pair: the mean of ``values`` over the examples ``weight`` counts."""
  return jnp.sum(values * weight), jnp.sum(weight)


def as_pair(value, count: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A metric as (total, count): pairs pass through, a scalar is a mean over ``count`` examples."""
  if isinstance(value, tuple):
    return value
  return value * count, count


def metric_mean(value) -> jax.Array:
  """A metric as the mean it stands for (a pair's total over its count)."""
  if isinstance(value, tuple):
    total, count = value
    return total / jnp.maximum(count, 1e-8)
  return value


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


def pool_feature(h: jax.Array, pool: str) -> jax.Array:
  """[B, H, W, C] -> [B, C] by global average ('avg'); anything else is flattened by the head."""
  return h.mean(axis=tuple(range(1, h.ndim - 1))) if pool == 'avg' and h.ndim > 2 else h


def check_choice(task_name: str, what: str, value: str, choices) -> None:
  if value not in choices:
    raise ValueError(f"task '{task_name}': unknown {what} '{value}'; choose one of: {', '.join(choices)}")


def head_input(backbone, input_shape, feature: str | None, task_name: str,
               pool: str = 'flatten') -> tuple[str, int, tuple[int, ...]]:
  """Picks the backbone feature a head reads and sizes the head: ``(feature, in_features, feature shape)``.

  ``feature`` None or '' means the backbone's ``output_name``. The backbone is traced abstractly on
  ``input_shape`` (what the task feeds it); a backbone that cannot take that size (CifarNet's fc layers fix the
  input size it was built for) and a feature it does not have are one clear error each.
  """
  feature = feature or backbone.output_name
  try:
    shapes = feature_shapes(backbone, tuple(input_shape))
  except Exception as e:  # pylint: disable=broad-except  # a shape error from deep inside the backbone
    raise ValueError(
        f"task '{task_name}' feeds the backbone {type(backbone).__name__} inputs of shape {tuple(input_shape)}, "
        f'which it was not built for ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Tasks sharing a '
        'backbone whose layers depend on the input size (cifarnet) must all feed it the same size: choose '
        'options that agree, or a global-pooled backbone (resnet20, resnet18_cifar, ...).') from e
  if feature not in shapes:
    raise ValueError(f"task '{task_name}': the backbone has no feature '{feature}'; it has: {', '.join(shapes)}")
  shape = shapes[feature]
  in_features = int(shape[-1] if pool == 'avg' and len(shape) > 1 else np.prod(shape))
  return feature, in_features, shape


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
