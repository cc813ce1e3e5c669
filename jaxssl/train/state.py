"""The model (one backbone, one head per task) and the train state as plain pytrees."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import ml_collections
import optax
from flax import nnx

from jaxssl.models import build_backbone
from jaxssl.tasks import Task


class SSLModel(nnx.Module):
  """A shared backbone and a head per task; the tasks decide how the two are called."""

  def __init__(self, backbone: nnx.Module, heads: dict[str, nnx.Module]):
    self.backbone = backbone
    self.heads = nnx.Dict(heads)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State          # nnx.Param leaves: what the optimizer updates
  model_state: nnx.State     # everything else (BatchNorm statistics)
  opt_state: optax.OptState


def build_model(model_cfg: ml_collections.ConfigDict, input_shape: tuple[int, ...], tasks: Sequence[Task],
                seed: int) -> SSLModel:
  rngs = nnx.Rngs(seed)
  options = dict(model_cfg.options)
  # Built for what the first task feeds it (jigsaw: tiles); every head then checks that its task's inputs fit.
  shape = tasks[0].backbone_input_shape(tuple(input_shape))
  backbone = build_backbone(model_cfg.name, input_shape=tuple(shape), rngs=rngs, **options)
  heads = {t.name: t.make_head(backbone, tuple(input_shape), rngs) for t in tasks}
  return SSLModel(backbone, heads)


def split_model(model: SSLModel) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  return nnx.split(model, nnx.Param, ...)


def merge_model(graphdef: nnx.GraphDef, params: nnx.State, model_state: nnx.State) -> SSLModel:
  # copy=True: the merged module gets fresh Variables at the current trace level, so BatchNorm may update
  # its statistics inside jax.value_and_grad.
  return nnx.merge(graphdef, params, model_state, copy=True)


def init_train_state(model: SSLModel, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
  graphdef, params, model_state = split_model(model)
  return graphdef, TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                              model_state=model_state, opt_state=tx.init(params))


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
