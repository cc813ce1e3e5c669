"""Supervised CIFAR-style ResNet on Fashion-MNIST: more accuracy than CifarNet, more compute (hours on 2 CPU
cores, minutes on a GPU). 30 epochs, SGD at lr 0.1; everything else as configs/fmnist_supervised.py.

  python -m jaxssl.main --config configs/fmnist_resnet.py --workdir runs/fmnist_resnet20
  python -m jaxssl.main --config configs/fmnist_resnet.py:resnet18_cifar --workdir runs/fmnist_resnet18

Expected: about 93-94% test top-1 for ResNet-20 (not yet measured here).

Arguments (``MODEL`` or ``model=MODEL``): resnet20 (default), resnet18_cifar, resnet18, resnet50.
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, model=common.Choice('resnet20', 'resnet18_cifar', 'resnet18', 'resnet50'))
  c = common.base_config()
  c.tasks.classify = common.classify_task()
  c.model.name = a.model
  c.model.options = ml_collections.ConfigDict({'width': 1.0})
  c.num_epochs = 30.0
  c.optim.lr = 0.1
  c.optim.weight_decay = 5e-4
  c.eval_every = 2340
  c.checkpoint_every = 1170
  return c
