"""Rotation and 2x2 jigsaw together on one backbone: total loss = 1.0 * rotation + 0.5 * jigsaw.

The rotation task feeds the backbone 28x28 images, the jigsaw task 12x12 tiles. CifarNet's fc layers fix the
input size it was built for, so the shared backbone here is ResNet-20 (global-pooled, any input size).
The dataset's labels are not used.

  python -m jaxssl.main --config configs/fmnist_rotation_jigsaw.py --workdir runs/fmnist_rotation_jigsaw

Held-out figures: ``rotation/acc`` and ``jigsaw/acc`` on the test split. Expected: to be measured (full run not
done yet). Quick look (100 steps of 32 images; ResNet-20 runs at about 2 s a step on 2 shared CPU cores, so
about 4 minutes; its figures are to be measured too):

  python -m jaxssl.main --config configs/fmnist_rotation_jigsaw.py:quick --workdir /tmp/fmnist_rot_jigsaw_quick
"""

import ml_collections

from configs import fmnist_supervised


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  c = fmnist_supervised.get_config()
  c.model.name = 'resnet20'
  c.model.options = ml_collections.ConfigDict({'width': 1.0})
  c.tasks = ml_collections.ConfigDict()
  c.tasks.rotation = ml_collections.ConfigDict({'weight': 1.0})
  c.tasks.jigsaw = ml_collections.ConfigDict({'kind': 'jigsaw', 'weight': 0.5, 'grid': 2, 'num_permutations': 24})
  # 128 images per step; rotation makes 512 examples of them, jigsaw 128 puzzles of 4 tiles.
  fmnist_supervised.set_pretext_schedule(c, lr=0.05)

  if arg == 'quick':
    fmnist_supervised.make_quick(c, train_limit=6400, eval_limit=500, batch_size=32, total_steps=100,
                                 eval_every=50)
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; this config knows: quick")
  return c
