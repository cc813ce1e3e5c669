"""Label-efficiency study on Fashion-MNIST: fine-tuning CifarNet from a pretext backbone vs. from scratch, on
1, 2, 5, 10, 20, 50 and 100% of the labelled training images (class-stratified), 5 seeds each.

  python -m jaxssl.study --config configs/fmnist_label_efficiency.py --workdir runs/fmnist_label_efficiency \
      --config.study.inits.rotation=runs/fmnist_rotation

Each cell is configs/fmnist_finetune.py (all layers, backbone at 0.1 x lr) trained for ``study.epochs`` epochs
of its subset, at least ``study.min_steps`` steps; the scratch cells use the same recipe with no init_from.
More inits: ``--config.study.inits.supervised=runs/fmnist_supervised`` is an override of a missing field, so
add it here. Expected at full scale: to be measured (70 runs; hours on 2 CPU cores, well under one on a GPU).
Measured at a reduced scale (README, "The experiment, measured at a reduced scale"; 2-core CPU, 2026-11-22;
fractions 1% and 5%, 2 seeds, min_steps 100, 5 epochs, batch 128, a 400-step rotation backbone): rotation init
75.1 +- 0.1% / 76.3 +- 0.9%, scratch 77.8 +- 1.5% / 80.8 +- 0.4% test top-1: no gain from that short
pretraining.
"""

import ml_collections

from configs import fmnist_finetune


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  c = fmnist_finetune.get_config(arg)
  c.study = ml_collections.ConfigDict()
  c.study.fractions = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
  c.study.seeds = (0, 1, 2, 3, 4)
  c.study.inits = ml_collections.ConfigDict({'rotation': 'runs/fmnist_rotation', 'scratch': ''})
  c.study.epochs = 10.0
  c.study.min_steps = 200
  c.study.metric = 'classify/top1'
  return c
