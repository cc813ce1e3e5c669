"""Jigsaw pretraining of AlexNet on DeepFashion images (their labels unused), then fine-tuning the multi-task model
from it. 3x3 puzzles of the multi-task config's prepared 256 px images: 85 px cells, 72 px tiles at random offsets
(13 px of jitter), each tile standardized; one of 100 maximal-min-Hamming permutations, classified by the
context-free network (AlexNet on every tile, shared weights; chance 1%). Held-out figure: ``jigsaw/acc`` on ``val``.

  python -m jaxssl.main --config configs/deepfashion_jigsaw.py --workdir runs/df_jigsaw
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_jigsaw \\
      --config.init_from=runs/df_jigsaw --config.optim.backbone_lr_scale=0.1

AlexNet's fc6 has one shape at every input size, so the 72 px tile backbone loads into the 227 px model. The quick
variant uses 2x2 puzzles (all 24 permutations) of 160 px images, since AlexNet needs tiles of at least 67 px:

  python -m jaxssl.main --config configs/deepfashion_jigsaw.py:sample,quick --workdir /tmp/df_jigsaw_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_jigsaw_quick \\
      --config.init_from=/tmp/df_jigsaw_quick --config.optim.backbone_lr_scale=0.1

Expected: to be measured (the benchmark is not on this machine).

Arguments as configs/deepfashion_multitask.py's: ``benchmark`` (default), ``sample``, ``csv``, each optionally
``,quick``.
"""

import ml_collections

from configs import deepfashion_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = deepfashion_common.parse(arg)
  c = deepfashion_common.base_config(a.variant, a.quick)
  c.tasks.jigsaw = ml_collections.ConfigDict({'kind': 'jigsaw', 'grid': 3, 'num_permutations': 100,
                                              'permutation_seed': 0, 'tile_norm': True})
  if a.quick:   # AlexNet needs tiles of at least 67 px
    c.data.image_size = 160
    c.tasks.jigsaw.grid, c.tasks.jigsaw.num_permutations = 2, 24
  return deepfashion_common.pretext_schedule(c, a.variant, a.quick)   # 64 puzzles (of 9 tiles) per step
