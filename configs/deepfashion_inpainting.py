"""Inpainting (context encoder, Pathak et al. 2016) pretraining of AlexNet on DeepFashion images (their labels
unused), then fine-tuning the multi-task model from it. The centre of every prepared 256 px image (half its side,
a quarter of its area: the paper's central region) is replaced by the training images' mean colour in the pipeline,
AlexNet (the multi-task config's backbone) encodes the rest, and a decoder head (jaxssl/tasks/decoder.py:
from the 14x14 ``conv5`` map, 2x nearest upsampling and 3x3 convolutions to 256 px) paints the image; the loss
is the squared error over the removed pixels. Held-out figures (``val``): ``inpainting/psnr`` over the removed
pixels against ``inpainting/fill_psnr`` (the mean-colour fill's own score); pictures in
``reconstructions_val_step<N>.png``.

  python -m jaxssl.main --config configs/deepfashion_inpainting.py --workdir runs/df_inpainting
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_inpainting \\
      --config.init_from=runs/df_inpainting --config.optim.backbone_lr_scale=0.1

AlexNet's fc6 has one shape at every input size, so the 256 px backbone loads into the 227 px multi-task model.
Quick look on the real sample (100 steps of 16 images at 112 px, the narrow AlexNet of every quick DeepFashion
config; the decoder reads its 5x5 ``conv5``), then the quick multi-task model from it:

  python -m jaxssl.main --config configs/deepfashion_inpainting.py:sample,quick --workdir /tmp/df_inp_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_inp_quick \\
      --config.init_from=/tmp/df_inp_quick --config.optim.backbone_lr_scale=0.1

Expected: benchmark to be measured; sample,quick 14.7 dB PSNR over the hole on the 35 val images, where the
mean-colour fill scores 10.4 dB (measured 2026-11-30, 2-core CPU shared with other jobs, oneDNN convolutions,
66 s); the fine-tune from it not yet measured.

Arguments as configs/deepfashion_multitask.py's: ``benchmark`` (default), ``sample``, ``csv``, each optionally
``,quick``.
"""

import ml_collections

from configs import deepfashion_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = deepfashion_common.parse(arg)
  c = deepfashion_common.base_config(a.variant, a.quick)
  c.tasks.inpainting = ml_collections.ConfigDict({
      'mask': 'center', 'mask_size': 0.5, 'num_blocks': 3, 'fill': 'mean', 'context_weight': 0.0, 'feature': 'conv5',
      'flip': True, 'decoder_width': 128, 'decoder_min_width': 32})
  return deepfashion_common.pretext_schedule(c, a.variant, a.quick)   # 64 images per step
