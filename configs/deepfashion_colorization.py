"""Colorization (Zhang, Isola & Efros 2016) pretraining of AlexNet on DeepFashion images (their labels unused), then
fine-tuning the multi-task model from it. AlexNet (the multi-task config's backbone) sees each prepared 256 px
image's CIE Lab lightness as a grey RGB image; a decoder head (jaxssl/tasks/decoder.py, from the 14x14 ``conv5``
map) predicts the chroma ab at a quarter of the size (64x64): by default as a distribution over the 261 ab squares
of side 10 that sRGB reaches, soft-encoded targets, class rebalancing by the training images' smoothed ab prior
(lambda 0.5), the annealed mean (T 0.38) as the colour; ``regression`` predicts ab directly with squared error.
Held-out figures (``val``): ``colorization/acc`` (pixels whose predicted ab is within 10 of the target) against
``colorization/gray_acc`` (what predicting grey scores), and ``colorization/auc`` (the paper's area under the
accuracy curve over thresholds 0-150); colourized pictures in ``reconstructions_val_step<N>.png``.

  python -m jaxssl.main --config configs/deepfashion_colorization.py --workdir runs/df_colorization
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_colorization \\
      --config.init_from=runs/df_colorization --config.optim.backbone_lr_scale=0.1

The backbone takes 3 channels (grey in each), so it loads into the RGB multi-task model unchanged. Quick look on
the real sample (100 steps of 16 images at 112 px, the narrow AlexNet of every quick DeepFashion config; 28x28
predictions from its 5x5 ``conv5``), then the quick multi-task model from it:

  python -m jaxssl.main --config configs/deepfashion_colorization.py:sample,quick --workdir /tmp/df_col_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_col_quick \\
      --config.init_from=/tmp/df_col_quick --config.optim.backbone_lr_scale=0.1

Expected: benchmark to be measured. On the 35 val images (measured 2026-11-30, 2-core CPU shared with other jobs,
oneDNN convolutions, about 1 min each): sample,quick acc 48.9%, AuC 92.7%, where grey scores 78.1% and 95.9%
(after 100 steps the rebalanced classifier paints vivid, mostly skin-toned colours; the paper's rebalanced model
also scores below grey on these raw measures); sample,regression,quick 78.4% and 95.6% (near-grey predictions,
as the paper's regression baseline). The quick multi-task model fine-tuned from the classification backbone:
test mean-sample F1 0.597, macro F1 0.247 (the multi-task config's priors alone: 0.596 / 0.244).

Arguments: ``benchmark`` (default), ``sample``, ``csv`` (as configs/deepfashion_multitask.py's), ``classification``
(default) or ``regression``, and ``quick``.
"""

import ml_collections

from configs import common, deepfashion_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, variant=common.Choice(*deepfashion_common.VARIANTS),
                       mode=common.Choice('classification', 'regression'), quick=False)
  c = deepfashion_common.base_config(a.variant, a.quick)
  c.tasks.colorization = ml_collections.ConfigDict({
      'mode': a.mode, 'feature': 'conv5', 'output_stride': 4, 'bin_size': 10.0, 'neighbours': 5,
      'rebalance': True, 'rebalance_lambda': 0.5, 'temperature': 0.38, 'threshold': 10.0, 'flip': True,
      'prior_images': 1000, 'decoder_width': 128, 'decoder_min_width': 32})
  return deepfashion_common.pretext_schedule(c, a.variant, a.quick)   # 64 images per step
