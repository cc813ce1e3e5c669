"""Rotation and 2x2 jigsaw together on one backbone: total loss = 1.0 * rotation + 0.5 * jigsaw, no labels. The
rotation task feeds the backbone 28x28 images, the jigsaw task 12x12 tiles; CifarNet's fc layers fix the input
size it was built for, so the shared backbone here is ResNet-20 (global-pooled, any input size). Held-out
figures: ``rotation/acc`` and ``jigsaw/acc`` on the test split.

  python -m jaxssl.main --config configs/fmnist_rotation_jigsaw.py --workdir runs/fmnist_rotation_jigsaw

Expected: full run to be measured; :quick rotation/acc 41.5%, jigsaw/acc 47.8% after 100 steps (measured
2026-11-30, 2-core CPU). Quick look (100 steps of 32 images, a few minutes on 2 CPU cores):

  python -m jaxssl.main --config configs/fmnist_rotation_jigsaw.py:quick --workdir /tmp/fmnist_rot_jigsaw_quick
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, quick=False)
  c = common.base_config()
  c.model.name = 'resnet20'
  c.model.options = ml_collections.ConfigDict({'width': 1.0})
  c.tasks.rotation = ml_collections.ConfigDict({'weight': 1.0})
  c.tasks.jigsaw = ml_collections.ConfigDict({'kind': 'jigsaw', 'weight': 0.5, 'grid': 2, 'num_permutations': 24})
  # 128 images per step; rotation makes 512 examples of them, jigsaw 128 puzzles of 4 tiles.
  common.set_pretext_schedule(c, lr=0.05)
  if a.quick:
    common.make_quick(c, train_limit=6400, eval_limit=500, batch_size=32, total_steps=100, eval_every=50)
  return c
