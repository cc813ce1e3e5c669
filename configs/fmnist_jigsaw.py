"""Jigsaw pretraining of CifarNet on the Fashion-MNIST training images, without their labels. The permutation
variants classify with a context-free network (CifarNet on each tile, shared weights, an MLP on the concatenated
tile features; the permutation set is saved with the run); the coords variants regress every tile's place.
Held-out figures (test split): ``jigsaw/acc``, or ``jigsaw/exact`` and ``jigsaw/solved`` for coords.

  python -m jaxssl.main --config configs/fmnist_jigsaw.py:3x3_perm --workdir runs/fmnist_jigsaw_3x3_perm

Quick look (200 steps of 64 images on 6400 training images, evaluated on the first 1000 test images):

  python -m jaxssl.main --config configs/fmnist_jigsaw.py:2x2_perm,quick --workdir /tmp/fmnist_jigsaw_quick

Expected: full runs to be measured; 2x2_perm,quick jigsaw/acc 93.4%, chance 4.2% (measured 2026-11-30, 2-core
CPU, oneDNN convolutions). The other variants' quick figures: docs/config_history.md.

The online probe is on (configs/common.py ``online_probe``): a linear classifier of the labels and a 200-NN vote
on the frozen pool2 feature of the centred tiles (perm variants) or the centred 24 x 24 square (coords variants),
what this tile-sized CifarNet takes; its figures are not yet measured. ``--config.online_probe.enabled=false``
turns it off.

Arguments (``VARIANT``, ``quick``, or ``variant=VARIANT,quick=true``; default 3x3_perm):
  2x2_perm    4 tiles of 12x12 (14x14 cells, 2 px of jitter), all 24 permutations; chance 1/24
  3x3_perm    9 tiles of 8x8 (9x9 cells, 1 px of jitter), 100 maximal-min-Hamming permutations; chance 1/100
  2x2_coords  the 4 shuffled tiles laid out as one 24x24 image; regress every tile's (row, col)
  3x3_coords  the 9 shuffled tiles laid out as one 24x24 image; regress every tile's (row, col)
  quick       the quick look above
"""

import ml_collections

from configs import common

VARIANTS = {
    '2x2_perm': {'kind': 'jigsaw', 'grid': 2, 'num_permutations': 24},
    '3x3_perm': {'kind': 'jigsaw', 'grid': 3, 'num_permutations': 100, 'permutation_seed': 0},
    '2x2_coords': {'kind': 'jigsaw_coords', 'grid': 2},
    '3x3_coords': {'kind': 'jigsaw_coords', 'grid': 3},
}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The jigsaw pretraining config for ``arg`` (the variants and ``quick``: see the module docstring)."""
  a = common.parse_arg(arg, variant=common.Choice(*VARIANTS, default='3x3_perm'), quick=False)
  c = common.base_config()
  c.tasks.jigsaw = ml_collections.ConfigDict({**VARIANTS[a.variant], 'tile_norm': True})
  common.set_pretext_schedule(c, lr=0.02)
  # The online probe and k-NN of pool2 (configs/common.py). CifarNet is built here for what the jigsaw feeds it, so
  # the probe feeds the same: the puzzle's centred tiles (their features concatenated), or for coords the centred
  # 24 x 24 square (grid x tile: 2 x 12 or 3 x 8).
  if VARIANTS[a.variant]['kind'] == 'jigsaw':
    common.enable_online_probe(c, feature='pool2', tiles=VARIANTS[a.variant]['grid'])
  else:
    common.enable_online_probe(c, feature='pool2', crop=24)
  if VARIANTS[a.variant]['kind'] == 'jigsaw_coords':
    # The coordinate regression sits at the mean prediction (loss 0.25 on 2x2) under SGD 0.02 and diverges at
    # 0.1; Adam leaves that plateau within 50 steps.
    c.optim.name = 'adamw'
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
  if a.quick:
    common.make_quick(c, train_limit=6400, eval_limit=1000, batch_size=64, total_steps=200, eval_every=100)
  return c
