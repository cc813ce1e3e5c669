"""BYOL pretraining of AlexNet on DeepFashion images (their labels unused), then fine-tuning the multi-task model
from it. The online network (AlexNet, BatchNorm, no dropout; projector; predictor) predicts a moving-average
target network's projection of another view of the same image. BYOL's views (as SimCLR's ImageNet ones, with blur
always on the first view and 0.1 on the second, solarization 0.2 on the second) on 224 px crops of the prepared
256 px images; target momentum from 0.996 to 1 on BYOL's cosine schedule; LARS at lr 0.2 x batch / 256, weight
decay 1.5e-6, 10 warmup epochs, cosine. Held-out figure: ``byol/cos`` on ``val`` (cosine between predictions and
the target's projections of the other view).

  python -m jaxssl.main --config configs/deepfashion_byol.py --workdir runs/df_byol
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_byol \\
      --config.init_from=runs/df_byol --config.optim.backbone_lr_scale=0.1

Quick look on the real sample (100 steps of 16 images, 112 px views, the narrow AlexNet), then the quick
multi-task model from it:

  python -m jaxssl.main --config configs/deepfashion_byol.py:sample,quick --workdir /tmp/df_byol_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_byol \\
      --config.init_from=/tmp/df_byol_quick --config.optim.backbone_lr_scale=0.1

Expected: benchmark to be measured. sample,quick (measured 2026-11-30, 2-core CPU shared with other jobs, oneDNN
convolutions, 92 s + 75 s): ``byol/cos`` 0.185 on the 35 val images (about 0 untrained); fine-tuned test macro F1
0.243, mean-sample F1 0.588 (from scratch 0.257 / 0.592, priors alone 0.244 / 0.596: 35 test images do not tell
these apart).

Arguments as configs/deepfashion_multitask.py's: ``benchmark`` (default), ``sample``, ``csv``, each optionally
``,quick``.
"""

import ml_collections

from configs import common, deepfashion_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = deepfashion_common.parse(arg)
  c = deepfashion_common.base_config(a.variant, a.quick)
  c.tasks.byol = deepfashion_common.two_view_task(
      c, a.quick, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, blur_prob=(1.0, 0.1),
      solarize_prob=(0.0, 0.2), proj_hidden=2048, proj_dim=256, pred_hidden=2048, base_momentum=0.996)
  deepfashion_common.pretext_schedule(c, a.variant, a.quick)
  common.set_lars(c, lr=0.2, scaling='linear', weight_decay=1.5e-6, warmup_epochs=1.0 if a.quick else 10.0)
  return c
