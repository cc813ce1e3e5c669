"""RotNet pretraining of AlexNet on DeepFashion images (their labels unused), then fine-tuning the multi-task model.

Every training image is shown at 0/90/180/270 degrees and AlexNet (BatchNorm, the multi-task config's backbone)
predicts the rotation; images are the multi-task config's prepared 256 px copies, so both runs prepare once.
Held-out figure: ``rotation/acc`` on ``val`` (chance 25%). Then the multi-task model starts from this backbone
(AlexNet's fc6 has one shape at every input size, so 256 px pretraining loads into the 227 px model):

  python -m jaxssl.main --config configs/deepfashion_rotation.py --workdir runs/df_rotation
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_rotation \
      --config.init_from=runs/df_rotation --config.optim.backbone_lr_scale=0.1
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_rotation --mode=predict

Compare with the same multi-task command without ``--config.init_from`` (from scratch) or with
configs/deepfashion_jigsaw.py's backbone. Arguments as in configs/deepfashion_multitask.py: ``benchmark``
(default), ``sample``, ``csv``, each optionally ``,quick``. On the real sample, a few minutes on a CPU:

  python -m jaxssl.main --config configs/deepfashion_rotation.py:sample,quick --workdir /tmp/df_rot_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_quick \
      --config.init_from=/tmp/df_rot_quick --config.optim.backbone_lr_scale=0.1

Measured 2026-11-22 on the 2-core CPU (shared), ``sample,quick`` (100 steps of 16 images, 1.5 min): rotation
accuracy 83.6% on the 35 val images (chance 25%); the quick multi-task model fine-tuned from it (the second
command above): test macro F1 0.292, mean-sample F1 0.604 at threshold 0.27, against 0.255 / 0.594 from
scratch. A rerun with XLA's convolution gradients (other rounding) gave 82.9%, 0.259 / 0.591 against 0.277 /
0.601: at 287 training and 35 test images the difference is noise. Again 2026-11-26 with oneDNN's convolutions
and BatchNorm (the machine otherwise idle): 82.9% in 27 s; fine-tuned, test macro F1 0.302, mean-sample F1 0.611
at threshold 0.27, in 28 s. Benchmark: to be measured.
"""

import ml_collections

from configs import deepfashion_multitask


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  variant, quick = deepfashion_multitask.parse(arg, 'deepfashion_rotation.py')
  c = deepfashion_multitask.base_config(variant, quick)
  c.tasks = ml_collections.ConfigDict()
  c.tasks.rotation = ml_collections.ConfigDict({'angles': (0, 90, 180, 270), 'flip': True})
  return deepfashion_multitask.pretext_schedule(c, variant, quick)   # 64 images (256 rotated) per step
