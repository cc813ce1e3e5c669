"""Relative patch location (Doersch et al. 2015) pretraining of AlexNet on DeepFashion images (their labels unused),
then fine-tuning the multi-task model from it. A centre patch and one of its 8 neighbours are cut from the
multi-task config's prepared 256 px images; AlexNet encodes each (shared weights), the two fc7 features are
concatenated and two fc layers as wide as AlexNet's (the paper's fc7 and fc8 after the pair is fused) feed an 8-way
classifier. Colour dropping counters the chromatic-aberration shortcut the paper found: each patch keeps one of its
three channels, the other two become their mean plus faint noise. Held-out figure: ``patch_location/acc`` on
``val`` (chance 12.5%), and ``acc_0`` .. ``acc_7`` per position (0 top-left ... 7 bottom-right).

  python -m jaxssl.main --config configs/deepfashion_patch_location.py --workdir runs/df_patch_location
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_patch_location \\
      --config.init_from=runs/df_patch_location --config.optim.backbone_lr_scale=0.1

Sizes. The paper cuts 96 px patches with a 48 px gap and 7 px of jitter from images of 150k-450k pixels. AlexNet
needs inputs of at least 67 px, and three patches and two gaps must fit across the 256 px images the other
DeepFashion configs prepare (one prepared copy for pretraining and fine-tuning): 68 px patches, an 18 px gap and
4 px of jitter span 3*68 + 2*18 + 2*4 = 248 px, so the layout can sit at 9 offsets per axis and the patches are
14 to 22 px apart. AlexNet's fc6 has one shape at every input size, so the 68 px patch backbone loads into the
227 px multi-task model; no canvas is needed (unlike CifarNet on Fashion-MNIST). The quick variant keeps the
256 px images and the patch sizes (the quick multi-task config's 112 px images cannot hold the layout) and the
narrow AlexNet of every quick DeepFashion config. Quick look on the real sample (100 steps of 16 pairs), then the
quick multi-task model from it:

  python -m jaxssl.main --config configs/deepfashion_patch_location.py:sample,quick --workdir /tmp/df_pl_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_pl_quick \\
      --config.init_from=/tmp/df_pl_quick --config.optim.backbone_lr_scale=0.1

Expected: benchmark to be measured; sample,quick 28.6% patch_location/acc on the 35 val images (chance 12.5%;
per position from 4 or 5 pairs each: too few to read), fine-tuned test macro F1 0.277, mean-sample F1 0.606
(measured 2026-11-30, 2-core CPU, oneDNN convolutions, 1m31s with preparing the 256 px sample + 2m31s).

Arguments as configs/deepfashion_multitask.py's: ``benchmark`` (default), ``sample``, ``csv``, each optionally
``,quick``.
"""

import ml_collections

from configs import deepfashion_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = deepfashion_common.parse(arg)
  c = deepfashion_common.base_config(a.variant, a.quick)
  c.data.image_size = 256   # also for quick: the layout needs 248 px
  width = c.model.options.fc_width
  c.tasks.patch_location = ml_collections.ConfigDict({
      'patch_size': 68, 'gap': 18, 'jitter': 4, 'chroma': 'drop', 'drop_noise': 0.01,
      'hidden_sizes': (width, width)})
  return deepfashion_common.pretext_schedule(c, a.variant, a.quick)   # 64 pairs per step
