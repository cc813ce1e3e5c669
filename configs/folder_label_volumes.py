"""Seed experiment 003's study: fine-tuning CifarNet on ten volumes of a folder's labels (0.1% to 100% of the
training images), from a RotNet backbone (configs/folder_rotation.py) and from scratch, each volume's subsets being
disjoint stratified folds (``study.subsets='kfold'``: 3 folds per volume where the volume allows, 2 at 50%, 1 at
100%; the cells beyond are listed in results.json). The val split (10% held out of the folder) scores every cell.
The rotation init is configs/folder_rotation.py's run: make it first (the study checks every init before its first
cell trains):

  python -m jaxssl.main --config configs/folder_rotation.py --workdir runs/catsdogs_rotation \\
      --config.data.source_dir=DIR
  python -m jaxssl.study --config configs/folder_label_volumes.py --workdir runs/catsdogs_volumes \\
      --config.data.source_dir=DIR --config.study.inits.rotation=runs/catsdogs_rotation

Quick look on the generated sample folder, its rotation init first:

  python -m jaxssl.main --config configs/folder_rotation.py:sample,quick --workdir /tmp/folder_rotation
  python -m jaxssl.study --config configs/folder_label_volumes.py:sample,quick --workdir /tmp/folder_volumes \\
      --config.study.inits.rotation=/tmp/folder_rotation

Expected: Dogs vs. Cats not measured here; sample,quick: see docs/results.md ("Seed 003 on an image folder").

Arguments: as configs/folder_rotation.py (``VARIANT[,quick]``); ``quick``: 4 volumes, 2 folds, 40 steps a cell.
"""

import ml_collections

from configs import common, folder_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The study over ten label volumes (``quick``: four), k-fold subsets, rotation vs. scratch."""
  a = folder_common.parse(arg)
  c = folder_common.base_config(a.variant, a.quick)
  c.tasks.classify = common.classify_task()
  common.set_finetune(c, 'all')
  c.optim.warmup_epochs = 0.0
  c.study = ml_collections.ConfigDict()
  c.study.fractions = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
  c.study.seeds = (0, 1, 2)
  c.study.subsets = 'kfold'
  c.study.inits = ml_collections.ConfigDict({'rotation': 'runs/catsdogs_rotation', 'scratch': ''})
  c.study.epochs = 20.0
  c.study.min_steps = 200
  c.study.metric = 'classify/top1'
  if a.quick:
    c.study.fractions = (0.05, 0.2, 0.5, 1.0)
    c.study.seeds = (0, 1)
    c.study.epochs = 0.0
    c.study.min_steps = 40
    c.batch_size = 32
  return c
