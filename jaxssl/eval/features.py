"""Frozen backbone features of a split, L2-normalized: what the k-NN probe votes with and the embedding draws."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxssl.data import datasets
from jaxssl.tasks.base import POOLS, normalize, pool_feature


class FeatureError(ValueError):
  """An evaluator's feature the backbone lacks, or an unknown pool: found when the backbone is built (the k-NN
  probe's ``knn.feature``, an evaluator's ``feature``), reported as one line."""


def check_feature(backbone_names, feature: str, pool: str, model_name: str, what: str) -> None:
  """One line for a feature the backbone lacks or an unknown pool (``what``: the option's name)."""
  if feature not in backbone_names:
    raise FeatureError(f"{what} '{feature}' is not a feature of {model_name}; it has: {', '.join(backbone_names)}")
  if pool not in POOLS:
    raise FeatureError(f"unknown pool '{pool}' for {what}; choose one of: {', '.join(POOLS)}")


def make_feature_fn(ctx, feature: str, pool: str):
  """Compiled (state, raw batch) -> {'features': L2-normalized [B, D]} of backbone ``feature`` pooled by ``pool``
  (inputs standardized with the dataset's statistics, the backbone in inference mode)."""
  info = ctx.info

  def features(model, batch):
    h = model.backbone(normalize(batch['image'], info.mean, info.std), train=False)[feature]
    h = pool_feature(h, pool).reshape(batch['image'].shape[0], -1).astype(jnp.float32)
    return {'features': h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)}

  return ctx.compile(features, per_example=True)


def extract(ctx, state, source, feature_fn, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Features and labels of every record of ``source`` (padding rows dropped), in record order."""
  got = ctx.gather(feature_fn, state, ctx.batches(source, tasks=None, batch_size=batch_size),
                   keep=lambda b: b['weight'] > 0, fields=lambda b: {'label': _labels(b)})
  return got['features'], got['label']


def _labels(batch):
  datasets.require_labels(batch, 'k-NN (and every evaluation of class features)')
  return batch['label']
