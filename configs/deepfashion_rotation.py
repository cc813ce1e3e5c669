"""RotNet pretraining of AlexNet on DeepFashion images (their labels unused), then fine-tuning the multi-task model
from it. Every training image is shown at 0/90/180/270 degrees and AlexNet (the multi-task config's backbone, on its
prepared 256 px images) predicts the rotation. Held-out figure: ``rotation/acc`` on ``val`` (chance 25%).

  python -m jaxssl.main --config configs/deepfashion_rotation.py --workdir runs/df_rotation
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_rotation \\
      --config.init_from=runs/df_rotation --config.optim.backbone_lr_scale=0.1

AlexNet's fc6 has one shape at every input size, so 256 px pretraining loads into the 227 px model. Compare with
the multi-task command without ``init_from`` (from scratch) or from configs/deepfashion_jigsaw.py. Quick look on
the real sample (100 steps of 16 images), then the quick multi-task model from it:

  python -m jaxssl.main --config configs/deepfashion_rotation.py:sample,quick --workdir /tmp/df_rot_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_quick \\
      --config.init_from=/tmp/df_rot_quick --config.optim.backbone_lr_scale=0.1

Expected: benchmark to be measured; sample,quick 82.9% rotation accuracy on the 35 val images, fine-tuned test
macro F1 0.302 (measured 2026-11-26, 2-core CPU, oneDNN convolutions, 27 s + 28 s). History: docs/config_history.md.

Arguments as configs/deepfashion_multitask.py's: ``benchmark`` (default), ``sample``, ``csv``, each optionally
``,quick``.
"""

import ml_collections

from configs import deepfashion_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = deepfashion_common.parse(arg)
  c = deepfashion_common.base_config(a.variant, a.quick)
  c.tasks.rotation = ml_collections.ConfigDict({'angles': (0, 90, 180, 270), 'flip': True})
  return deepfashion_common.pretext_schedule(c, a.variant, a.quick)   # 64 images (256 rotated) per step
