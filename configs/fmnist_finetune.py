"""Fine-tuning CifarNet on Fashion-MNIST from another run's backbone; the same command without
``--config.init_from`` is the from-scratch baseline (same recipe, only the initialization differs), and
``--config.init_from=runs/fmnist_supervised`` the pretrained one. ``--config.init_step=N`` picks a checkpoint
other than the latest.

  python -m jaxssl.main --config configs/fmnist_finetune.py --workdir runs/fmnist_ft_rotation \\
      --config.init_from=runs/fmnist_rotation
  python -m jaxssl.main --config configs/fmnist_finetune.py:last:1 --workdir runs/fmnist_ft1_rotation \\
      --config.init_from=runs/fmnist_rotation

Expected: to be measured.

Arguments (``TRAINABLE`` or ``trainable=TRAINABLE``):
  all         every layer trains, the backbone at a tenth of the head's lr (optim.backbone_lr_scale=0.1); default
  last:K      only the backbone's last K parameterized layers in call order (a conv and its BatchNorm count as
              one; on CifarNet ``last:1`` is fc2 alone, the seed experiment's "unfreeze only the final fully
              connected layer") at the full lr, everything earlier frozen
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, trainable=common.Word('all'))
  c = common.base_config()
  c.tasks.classify = common.classify_task()
  return common.set_finetune(c, a.trainable)
