"""BYOL, Bootstrap Your Own Latent (Grill et al., NeurIPS 2020): an online network (backbone, projector, predictor)
predicts a target network's projection of the other view of the same image; the target is a moving average of
the online backbone and projector, with no negatives.

The target is the task's state (jaxssl/tasks/base.py ``Task.update_state``): copies of the backbone and the
projector whose weights are :class:`Target` variables, not ``nnx.Param``, so they sit in the train state's
``model_state``, the optimizer never touches them, and checkpoints, resumes, evaluations and the non-finite-step
rollback carry them with the model. At the start of every step, inside the jitted step, they move towards the
online weights: ``target = tau * target + (1 - tau) * online``, with BYOL's cosine schedule
``tau = 1 - (1 - base_momentum) * (cos(pi k / K) + 1) / 2`` rising from ``base_momentum`` to 1 over the run's K
steps, and ``tau = 0`` at the first update the run keeps (a counter in the head's state, rolled back with it after
a non-finite step): the target starts as a copy of the online network, also when that was loaded with
``init_from``. Updating before the forward rather than after the optimizer step is the paper's order: step
k's target averages the weights up to step k's own. The target runs in training mode (batch statistics; its
BatchNorm keeps its own running statistics, used at evaluation), under ``stop_gradient``.

Views are BYOL's: blur always on the first and with probability 0.1 on the second, solarization 0.2 on the
second only. Batch layout as SimCLR's (jaxssl/tasks/contrastive.py).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.tasks.base import Batch, weighted_mean
from jaxssl.tasks.contrastive import MLP, TwoViews, l2_normalize


class Target(nnx.Variable):  # pylint: disable=abstract-method  # as nnx.Param: in-place operators unused
  """A target network's weight: a moving average of a parameter, never an optimizer's."""


def target_momentum(step, total_steps: int, base: float):
  """BYOL's schedule: ``1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2`` (``base`` at step 0, 1 at the
  end); ``base`` throughout when ``total_steps`` is unknown (0)."""
  if total_steps <= 0:
    return jnp.asarray(base, jnp.float32)
  progress = jnp.minimum(jnp.asarray(step, jnp.float32) / total_steps, 1.0)
  return 1.0 - (1.0 - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


def ema_update(target, online, tau):
  """``tau * target + (1 - tau) * online``, leaf by leaf (two pytrees of one structure)."""
  return jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, target, online)


def regression_loss(p: jax.Array, z: jax.Array) -> jax.Array:
  """BYOL's per-example loss: the squared distance of the unit vectors, ``2 - 2 cos(p, z)`` [N]."""
  return 2.0 - 2.0 * jnp.sum(l2_normalize(p) * l2_normalize(z), axis=-1)


def byol_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array, weight: jax.Array) -> tuple[jax.Array,
                                                                                                      dict]:
  """The symmetric loss: view 1's prediction ``p1`` regresses view 2's target projection ``z2`` and ``p2``
  regresses ``z1`` (targets taken as constants); a mean over images weighted by ``weight``, in [0, 8]. Returns
  ``(loss, {'loss', 'cos'})``, ``cos`` the mean cosine between predictions and their targets."""
  z1, z2 = jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2)
  per_image = regression_loss(p1, z2) + regression_loss(p2, z1)
  loss = weighted_mean(per_image, weight)
  return loss, {'loss': loss, 'cos': 1.0 - loss / 4.0}


def frozen_copy(module: nnx.Module) -> nnx.Module:
  """A copy of ``module`` whose parameters are :class:`Target` variables. Every array is copied: two leaves of
  the train state must not share a buffer (the jitted step donates each one)."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  targets = jax.tree.map(lambda v: Target(jnp.copy(v.get_value())), params,
                         is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.merge(graphdef, targets, jax.tree.map(jnp.copy, rest), copy=True)


class BYOLHead(nnx.Module):
  """The online projector and predictor, and the target: copies of the backbone and the projector."""

  def __init__(self, backbone: nnx.Module, feature: str, in_features: int, proj_hidden: int, proj_dim: int,
               pred_hidden: int, *, rngs: nnx.Rngs):
    self.feature = feature
    self.projector = MLP(in_features, proj_hidden, proj_dim, rngs=rngs)
    self.predictor = MLP(proj_dim, pred_hidden, proj_dim, rngs=rngs)
    self.target_backbone = frozen_copy(backbone)
    self.target_projector = frozen_copy(self.projector)
    # Moving-average updates kept so far: the first copies the online weights (a non-finite step 0 is rolled back
    # with it, so the copy happens at the first step that counts, not at step 0 alone).
    self.ema_updates = Target(jnp.zeros((), jnp.int32))


@dataclasses.dataclass
class BYOL(TwoViews):
  """Predict the target network's projection of the other view."""
  name: str = 'byol'
  blur_prob: tuple[float, float] = (1.0, 0.1)
  solarize_prob: tuple[float, float] = (0.0, 0.2)
  proj_hidden: int = 1024
  proj_dim: int = 256
  pred_hidden: int = 1024
  base_momentum: float = 0.996

  def __post_init__(self):
    super().__post_init__()
    if self.pred_hidden < 1:
      raise ValueError(f"task '{self.name}': pred_hidden must be >= 1")
    if not 0 <= self.base_momentum <= 1:
      raise ValueError(f"task '{self.name}': base_momentum must be in [0, 1], got {self.base_momentum}")

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    feature, in_features = self.representation(backbone, input_shape)
    return BYOLHead(backbone, feature, in_features, self.proj_hidden, self.proj_dim, self.pred_hidden, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    b = batch['image'].shape[0]
    online_rng, target_rng = (None, None) if rng is None else tuple(jax.random.split(rng))
    h = self.encode(backbone, head.feature, batch['image'], train=train, rng=online_rng)
    prediction = head.predictor(head.projector(h, train=train), train=train)
    ht = self.encode(head.target_backbone, head.feature, batch['image'], train=train, rng=target_rng)
    target = jax.lax.stop_gradient(head.target_projector(ht, train=train))
    return {'prediction': prediction.reshape(b, 2, -1), 'target': target.reshape(b, 2, -1)}

  def loss(self, outputs, batch: Batch):
    p, z = outputs['prediction'], outputs['target']
    return byol_loss(p[:, 0], p[:, 1], z[:, 0], z[:, 1], batch['weight'])

  def update_state(self, backbone, head, *, step, total_steps: int) -> None:
    updates = head.ema_updates.get_value()
    tau = jnp.where(updates == 0, 0.0, target_momentum(step, total_steps, self.base_momentum))
    head.ema_updates.set_value(updates + 1)
    for online, target in ((backbone, head.target_backbone), (head.projector, head.target_projector)):
      state = nnx.state(target, Target)
      moved = ema_update(nnx.to_pure_dict(state), nnx.to_pure_dict(nnx.state(online, nnx.Param)), tau)
      nnx.replace_by_pure_dict(state, moved)
      nnx.update(target, state)
