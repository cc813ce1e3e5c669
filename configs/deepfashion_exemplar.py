"""Exemplar CNN pretraining (Dosovitskiy et al. 2014) of AlexNet on DeepFashion images (their labels unused), then
fine-tuning the multi-task model from it. N training images chosen by ``exemplar_seed`` are the classes (2,000 of
the benchmark's, 256 of the sample's), each seen under a new random composition of the seed experiment's six
transformations: translation, scale, rotation, contrast (the HSV value), colour (hue and saturation), flip; pixels
from outside the photo are reflected. AlexNet (the multi-task config's, on its prepared square images) classifies
which exemplar a view shows. Held-out figure: ``exemplar/acc`` on new views drawn for every ``val`` record (chance
1/N). On the benchmark the online probe (configs/common.py) also reports a linear and a k-NN probe of the category
on the frozen fc6 feature; the attribute sample has no categories, so it has none.

  python -m jaxssl.main --config configs/deepfashion_exemplar.py --workdir runs/df_exemplar
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask_exemplar \\
      --config.init_from=runs/df_exemplar --config.optim.backbone_lr_scale=0.1

The exemplars are held in memory (2,000 of 256 x 256 x 3: 393 MB; the task refuses more than 1 GiB) and saved with
the run (``artifacts/exemplar/``). Quick look on the real sample (100 steps of 16 views of 32 exemplars), then the
quick multi-task model from it:

  python -m jaxssl.main --config configs/deepfashion_exemplar.py:sample,quick --workdir /tmp/df_exemplar_quick
  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_ft_exemplar_quick \\
      --config.init_from=/tmp/df_exemplar_quick --config.optim.backbone_lr_scale=0.1

Expected: benchmark to be measured (not on this machine); sample,quick: exemplar/acc 14.3% on new views of the 35
val records (chance 3.1%; measured 2026-11-30, 2-core CPU, oneDNN convolutions, 1m58s).

Arguments as configs/deepfashion_multitask.py's: ``benchmark`` (default), ``sample``, ``csv``, each optionally
``,quick``.
"""

import ml_collections

from configs import common, deepfashion_common

TRANSFORMS = ('translate', 'scale', 'rotate', 'contrast', 'colour', 'flip')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = deepfashion_common.parse(arg)
  c = deepfashion_common.base_config(a.variant, a.quick)
  c.tasks.exemplar = ml_collections.ConfigDict({
      'num_exemplars': 2000 if a.variant == 'benchmark' else 256, 'transforms_per_exemplar': 0, 'exemplar_seed': 0,
      'transforms': TRANSFORMS, 'translate': 0.2, 'scale': (0.7, 1.4), 'rotate': 20.0, 'power': (0.25, 4.0),
      'multiply': (0.7, 1.4), 'add': 0.1, 'hue': 0.1, 'fill': 'reflect'})
  if a.quick:
    c.tasks.exemplar.num_exemplars = 32
  if a.variant == 'benchmark':   # the benchmark's images have categories; the sample's and a CSV's may not
    common.enable_online_probe(c, feature='fc6', label_key='category')
  return deepfashion_common.pretext_schedule(c, a.variant, a.quick)   # 64 views per step (sample: 32, quick: 16)
