"""SimCLR pretraining of AlexNet on DeepFashion images (their labels unused), then fine-tuning the multi-task model
from it. Two random views of every image with ImageNet's SimCLR augmentations (random resized crop, flip, colour
jitter of strength 0.8, grayscale 0.2, blur 0.5), AlexNet (the multi-task config's backbone, BatchNorm, no dropout)
on 224 px views of the prepared 256 px images, a projector MLP, NT-Xent at temperature 0.2 against the batch's
other views; LARS at lr 0.075 x sqrt(batch) (SimCLR's small-batch scaling), 10 warmup epochs, cosine. Held-out
figure: ``simclr/acc`` on ``val`` (each view finds its partner among the other views of its eval batch).

  python -m jaxssl.main --config configs/deepfashion_simclr.py --workdir runs/df_simclr
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_simclr \\
      --config.init_from=runs/df_simclr --config.optim.backbone_lr_scale=0.1

Quick look on the real sample (100 steps of 16 images, 112 px views of the 112 px quick images, the narrow
AlexNet), then the quick multi-task model from it:

  python -m jaxssl.main --config configs/deepfashion_simclr.py:sample,quick --workdir /tmp/df_simclr_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_simclr \\
      --config.init_from=/tmp/df_simclr_quick --config.optim.backbone_lr_scale=0.1

Expected: benchmark to be measured. sample,quick (measured 2026-11-30, 2-core CPU shared with other jobs, oneDNN
convolutions, 68 s + 78 s): ``simclr/acc`` 14.3% on the 35 val images (69 candidates, chance 1.4%); fine-tuned test
macro F1 0.246, mean-sample F1 0.583 (from scratch 0.257 / 0.592, priors alone 0.244 / 0.596: 35 test images do
not tell these apart).

Arguments as configs/deepfashion_multitask.py's: ``benchmark`` (default), ``sample``, ``csv``, each optionally
``,quick``.
"""

import ml_collections

from configs import common, deepfashion_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = deepfashion_common.parse(arg)
  c = deepfashion_common.base_config(a.variant, a.quick)
  c.tasks.simclr = deepfashion_common.two_view_task(
      c, a.quick, temperature=0.2, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_prob=(0.5, 0.5),
      proj_hidden=2048, proj_dim=128)
  deepfashion_common.pretext_schedule(c, a.variant, a.quick)
  common.set_lars(c, lr=0.075, scaling='sqrt', weight_decay=1e-6, warmup_epochs=1.0 if a.quick else 10.0)
  return c
