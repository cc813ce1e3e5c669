"""Backbone registry: name -> constructor(input_shape=..., rngs=..., **options)."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.models.alexnet import AlexNet
from jaxssl.models.cifarnet import CifarNet
from jaxssl.models.resnet import ResNet, resnet18, resnet18_cifar, resnet20, resnet50

BACKBONES: dict[str, Callable[..., nnx.Module]] = {
    'cifarnet': CifarNet,
    'alexnet': AlexNet,
    'resnet20': resnet20,
    'resnet18_cifar': resnet18_cifar,
    'resnet18': resnet18,
    'resnet50': resnet50,
}


def build_backbone(name: str, *, input_shape, rngs: nnx.Rngs, **options) -> nnx.Module:
  if name not in BACKBONES:
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(BACKBONES)}")
  return BACKBONES[name](input_shape=tuple(input_shape), rngs=rngs, **options)


def feature_shapes(backbone: nnx.Module, input_shape) -> dict[str, tuple[int, ...]]:
  """Per-example shape of every named feature, traced abstractly (no FLOPs).

  Works on concrete modules and on abstract ones made with nnx.eval_shape.
  """
  graphdef, state = nnx.split(backbone)

  def fwd(state, x):
    return nnx.merge(graphdef, state)(x, train=False)

  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  out = jax.eval_shape(fwd, state, x)
  # eval_shape's pytree flattening sorts dict keys; restore input-to-output order.
  return {k: tuple(out[k].shape[1:]) for k in backbone.feature_names}


__all__ = ['AlexNet', 'BACKBONES', 'CifarNet', 'ResNet', 'build_backbone', 'feature_shapes',
           'resnet18', 'resnet18_cifar', 'resnet20', 'resnet50']
