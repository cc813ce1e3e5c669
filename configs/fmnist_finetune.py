"""Fine-tuning on Fashion-MNIST from another run's backbone, and the matching from-scratch baseline.

Every layer trains, the backbone at a tenth of the head's learning rate (``optim.backbone_lr_scale=0.1``), or,
with the argument ``last:K``, only the backbone's last K parameterized layers in call order (a conv and its
BatchNorm count as one; on CifarNet ``last:1`` is fc2 alone, the seed experiment's "unfreeze only the final
fully connected layer") at the full learning rate, everything earlier frozen:

  python -m jaxssl.main --config configs/fmnist_finetune.py --workdir runs/fmnist_ft_rotation \
      --config.init_from=runs/fmnist_rotation
  python -m jaxssl.main --config configs/fmnist_finetune.py:last:1 --workdir runs/fmnist_ft1_rotation \
      --config.init_from=runs/fmnist_rotation

Baselines, same recipe so that only the initialization differs:
  scratch:     the same command without --config.init_from (random backbone, same lr scale and frozen layers);
  pretrained:  --config.init_from=<any other run>, e.g. runs/fmnist_supervised (a labelled CifarNet).
``--config.init_step=N`` picks a checkpoint other than the latest. Expected: to be measured.
"""

import ml_collections

from configs import fmnist_supervised


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  c = fmnist_supervised.get_config()
  if arg in ('', 'all'):
    c.optim.trainable = 'all'
    c.optim.backbone_lr_scale = 0.1
  elif arg.startswith('last:'):
    c.optim.trainable = arg   # checked (K >= 1) with the rest of the config
    c.optim.backbone_lr_scale = 1.0
  else:
    raise ValueError(f"unknown config argument '{arg}'; this config knows: all, last:K")
  return c
