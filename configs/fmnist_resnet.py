"""Supervised ResNet-20 (CIFAR-style) on Fashion-MNIST: more accuracy than CifarNet, more compute.

  python -m jaxssl.main --config configs/fmnist_resnet.py --workdir runs/fmnist_resnet20
  python -m jaxssl.main --config configs/fmnist_resnet.py:resnet18_cifar --workdir runs/fmnist_resnet18

Expected: about 93-94% test top-1 after 30 epochs (ResNet-20). On 2 CPU cores this is hours; on a GPU,
minutes. Everything not set here is as in fmnist_supervised.py.
"""

from configs import fmnist_supervised


def get_config(arg: str = 'resnet20'):
  c = fmnist_supervised.get_config()
  c.model.name = arg or 'resnet20'
  c.model.options = {'width': 1.0}
  c.num_epochs = 30.0
  c.optim.lr = 0.1
  c.optim.weight_decay = 5e-4
  c.eval_every = 2340
  c.checkpoint_every = 1170
  return c
