"""Linear probe on Fashion-MNIST: a linear classifier on one layer of another run's backbone, which never changes
(the optimizer gives it zero updates, ``optim.trainable='heads'``, and the task runs it in inference mode, so
BatchNorm statistics stay as they were). Middle layers transfer best (RotNet, Gidaris et al. 2018).

  python -m jaxssl.main --config configs/fmnist_linear.py:conv2 --workdir runs/fmnist_linear_conv2 \\
      --config.init_from=runs/fmnist_rotation

Baselines with the same command: no ``init_from`` (a random backbone), or ``--config.init_from=runs/fmnist_supervised``
(the upper reference). Expected: full scale to be measured; reduced scale (``:pool2``, 300 steps, 400-step rotation
backbone) 81.3% test top-1, 85.0% on a random backbone (measured 2026-11-22, 2-core CPU); see docs/config_history.md.

Arguments (``LAYER[,POOL]``, or ``layer=LAYER,pool=POOL``):
  LAYER       the backbone layer to probe (CifarNet: conv1, pool1, conv2, pool2, fc1, fc2); default fc1
  flatten     flatten a spatial map (default)
  avg         global-average-pool a spatial map instead
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, layer=common.Word('fc1'), pool=common.Choice('flatten', 'avg'))
  c = common.base_config()
  c.tasks.classify = common.classify_task(feature=a.layer, pool=a.pool, freeze_backbone=True)
  c.optim.trainable = 'heads'
  c.optim.lr = 0.1
  c.num_epochs = 10.0
  return c
