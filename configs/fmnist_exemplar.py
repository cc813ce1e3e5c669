"""Exemplar CNN pretraining (Dosovitskiy et al. 2014) on the Fashion-MNIST training images, without their labels:
8,000 training images chosen by ``exemplar_seed`` are the classes, each seen under a new random composition of the
six transformations of the seed experiment (translation, scale, rotation, contrast, flip; colour is skipped on
grey images), and the network classifies which exemplar a view shows (chance 1/8000). The exemplars are saved
with the run (``artifacts/exemplar/``). Held-out figure: ``exemplar/acc`` on new views drawn for every test
record; beside it the online probe (``probe/top1``, linear, and ``probe/knn_top1``, 200-NN) of the labels on the
frozen pool2 (CifarNet) or pool (ResNet) feature, which does not change the pretraining.

  python -m jaxssl.main --config configs/fmnist_exemplar.py --workdir runs/fmnist_exemplar
  python -m jaxssl.main --config configs/fmnist_exemplar.py:resnet18_cifar --workdir runs/fmnist_exemplar_r18

Quick look (200 steps of 64 views of 100 exemplars among 6,400 training images, evaluated on views for the first
1,000 test records; the probe trains on the 64 records of each batch; ResNet-18: 100 steps of 32):

  python -m jaxssl.main --config configs/fmnist_exemplar.py:quick --workdir /tmp/fmnist_exemplar_quick
  python -m jaxssl.main --config configs/fmnist_exemplar.py:resnet18_cifar,quick --workdir /tmp/fmnist_ex_r18_quick

Expected: full runs to be measured (hours on 2 CPU cores). :quick (CifarNet): exemplar/acc 40.1% on new views
(chance 1%), probe/top1 84.2%, probe/knn_top1 70.2%; the same command with --config.optim.backbone_lr_scale=0 (the
backbone left random, the heads trained) gives 16.7%, 84.1% and 63.0%: 200 steps of exemplar pretraining lift the
k-NN by 7 points but not yet the linear probe of pool2, which a random CifarNet already makes strong (measured
2026-11-30, 2-core CPU, oneDNN convolutions, about a minute each). :resnet18_cifar,quick: exemplar/acc 3.5%, probe/top1
51.9%, probe/knn_top1 48.1% after 100 steps (2026-11-30, 2-core CPU, 5m06s): a smoke test, not a figure to
compare.

Arguments (``MODEL``, ``quick``, or ``model=MODEL,quick=true``): cifarnet (default) or resnet18_cifar (CIFAR
stem, global-pooled: a 512 x N head); ``quick`` the quick look above.
"""

import ml_collections

from configs import common

TRANSFORMS = ('translate', 'scale', 'rotate', 'contrast', 'colour', 'flip')   # colour: ignored on grey images


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The Exemplar CNN config for ``arg`` (see the module docstring)."""
  a = common.parse_arg(arg, model=common.Choice('cifarnet', 'resnet18_cifar'), quick=False)
  c = common.base_config()
  c.tasks.exemplar = ml_collections.ConfigDict({
      'num_exemplars': 8000, 'transforms_per_exemplar': 0, 'exemplar_seed': 0, 'transforms': TRANSFORMS,
      # The paper's ranges: shifts up to 0.2 of the side, zoom 0.7-1.4, +-20 degrees, intensity v ** [1/4, 4]
      # x [0.7, 1.4] + [-0.1, 0.1]. Fashion-MNIST's background is 0, so pixels from outside are zeros.
      'translate': 0.2, 'scale': (0.7, 1.4), 'rotate': 20.0, 'power': (0.25, 4.0), 'multiply': (0.7, 1.4),
      'add': 0.1, 'fill': 'zero'})
  # 128 views per step for 15 epochs' worth of steps of the 60,000 records (~112 views per exemplar). lr 0.05: on the
  # quick look 0.02, 0.1 and AdamW at 1e-3 reached the same surrogate accuracy with 500 exemplars (3.0-3.6%).
  common.set_pretext_schedule(c, lr=0.05)
  probe_feature = 'pool2'
  if a.model == 'resnet18_cifar':
    c.model.name = a.model
    c.model.options = ml_collections.ConfigDict({'width': 1.0})
    probe_feature = 'pool'
  common.enable_online_probe(c, feature=probe_feature)
  if a.quick:
    c.tasks.exemplar.num_exemplars = 100   # ~128 views each in 200 steps (500 exemplars: 3.6% after 200 steps)
    common.make_quick(c, train_limit=6400, eval_limit=1000, batch_size=64, total_steps=200, eval_every=100)
    if a.model == 'resnet18_cifar':   # a step of ResNet-18 costs ~20x CifarNet's on a CPU
      c.batch_size, c.total_steps, c.eval_every = 32, 100, 50
      c.checkpoint_every = 50
      c.online_probe.knn_train_limit = 2000   # the k-NN's forward of every training image dominates an evaluation
  return c
