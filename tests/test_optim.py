"""Schedules and optimizers from config values."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from jaxssl.train import optim


def _cfg(**kw):
  base = dict(name='sgd', lr=0.1, momentum=0.9, schedule='cosine', warmup_epochs=0.0, step_size_epochs=2.0,
              gamma=0.1, weight_decay=0.0)
  return ml_collections.ConfigDict({**common.base_config().optim.to_dict(), **base, **kw})


def test_step_schedule_multiplies_by_gamma_every_step_size_epochs():
  sched = optim.make_schedule(_cfg(schedule='step'), total_steps=100, steps_per_epoch=10)
  lrs = [float(sched(s)) for s in (0, 19, 20, 39, 40)]
  np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_cosine_warms_up_linearly_then_decays_to_zero():
  sched = optim.make_schedule(_cfg(warmup_epochs=1.0), total_steps=100, steps_per_epoch=10)
  np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10)], [0.0, 0.05, 0.1], atol=1e-7)
  np.testing.assert_allclose(float(sched(55)), 0.05, atol=1e-3)  # half-way through the cosine
  assert float(sched(100)) == pytest.approx(0.0, abs=1e-7)


def test_weight_decay_spares_biases():
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  zero = {'kernel': jnp.zeros((2, 2)), 'bias': jnp.zeros((2,))}
  for name in ('sgd', 'adam', 'adamw'):
    tx, _ = optim.make_optimizer(_cfg(name=name, schedule='constant', weight_decay=0.5), 10, 1)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates['bias']).max()) == 0.0, name
    assert float(updates['kernel'].max()) < 0.0, name


def test_unknown_names_list_the_choices():
  with pytest.raises(ValueError, match='choose one of: sgd, adam, adamw'):
    optim.make_optimizer(_cfg(name='lamb'), 10, 1)
  with pytest.raises(ValueError, match='choose one of: constant, cosine, step'):
    optim.make_schedule(_cfg(schedule='poly'), 10, 1)
