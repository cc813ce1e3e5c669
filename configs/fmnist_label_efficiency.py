"""Label-efficiency study on Fashion-MNIST: fine-tuning CifarNet from a pretext backbone vs. from scratch, on
1, 2, 5, 10, 20, 50 and 100% of the labelled training images (class-stratified), 5 seeds each. Each cell is
configs/fmnist_finetune.py's recipe trained for ``study.epochs`` epochs of its subset, at least
``study.min_steps`` steps; the scratch cells have no init_from. The rotation init is the RotNet run that
configs/fmnist_rotation.py trains: make it first (the study checks every init before its first cell trains):

  python -m jaxssl.main --config configs/fmnist_rotation.py --workdir runs/fmnist_rotation
  python -m jaxssl.study --config configs/fmnist_label_efficiency.py --workdir runs/fmnist_label_efficiency \\
      --config.study.inits.rotation=runs/fmnist_rotation

More inits: ``--config.study.inits.supervised=DIR`` (study.inits takes new names), or add them here. Expected: full
scale to be measured (70 runs); reduced scale (1% / 5%, 2 seeds, 400-step rotation backbone) rotation init 75.1 /
76.3%, scratch 77.8 / 80.8% test top-1 (measured 2026-11-22, 2-core CPU); see docs/config_history.md.

Arguments as configs/fmnist_finetune.py's: ``all`` (default) or ``last:K``.
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The study config for ``arg``: fmnist_finetune's recipe plus the study's fractions, seeds and inits."""
  a = common.parse_arg(arg, trainable=common.Word('all'))
  c = common.base_config()
  c.tasks.classify = common.classify_task()
  common.set_finetune(c, a.trainable)
  c.study = ml_collections.ConfigDict()
  c.study.fractions = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
  c.study.seeds = (0, 1, 2, 3, 4)
  c.study.inits = ml_collections.ConfigDict({'rotation': 'runs/fmnist_rotation', 'scratch': ''})
  c.study.epochs = 10.0
  c.study.min_steps = 200
  c.study.metric = 'classify/top1'
  return c
