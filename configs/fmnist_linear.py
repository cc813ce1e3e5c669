"""Linear probe on Fashion-MNIST: a frozen backbone from another run, a linear classifier on one of its layers.

The backbone comes from ``--config.init_from`` (a workdir, its latest checkpoint; or
``<workdir>/checkpoints/<step>``) and never changes: the optimizer gives it zero updates
(``optim.trainable='heads'``) and the task runs it in inference mode without gradients
(``tasks.classify.freeze_backbone``), so BatchNorm statistics stay as they were. The argument picks the layer
(RotNet, Gidaris et al. 2018: middle layers transfer best), optionally with ``,avg`` to global-average-pool a
spatial map instead of flattening it:

  python -m jaxssl.main --config configs/fmnist_linear.py:conv2 --workdir runs/fmnist_linear_conv2 \
      --config.init_from=runs/fmnist_rotation
  python -m jaxssl.main --config configs/fmnist_linear.py:fc1 --workdir runs/fmnist_linear_fc1 \
      --config.init_from=runs/fmnist_rotation

Baselines with the same command: a random backbone (leave ``init_from`` empty: the probe of an untrained
network), or a supervised one (``--config.init_from=runs/fmnist_supervised``: the upper reference).
Default layer: fc1. Expected at full scale: to be measured. Measured at a reduced scale (README, "The experiment,
measured at a reduced scale"; 2-core CPU, 2026-11-22): ``:pool2`` for 300 steps (1.3 epochs) gave 81.3% test
top-1 (first 2,000 test images) on a backbone after 400 steps of rotation pretraining, and 85.0% on a random
backbone.
"""

import ml_collections

from configs import fmnist_supervised


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  c = fmnist_supervised.get_config()
  feature, _, pool = (arg or 'fc1').partition(',')
  c.tasks.classify.feature = feature
  c.tasks.classify.pool = pool or 'flatten'
  c.tasks.classify.freeze_backbone = True
  c.optim.trainable = 'heads'
  c.optim.lr = 0.1
  c.num_epochs = 10.0
  return c
