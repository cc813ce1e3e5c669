"""``data.normalize``: which mean and std standardize a run's images (every task's ``normalize``, the evaluators'
features).

- 'dataset' (the default): the dataset's own statistics (DatasetInfo.mean / std: Fashion-MNIST's, or those of
  the prepared DeepFashion training images), right for a backbone trained from scratch on it.
- 'imagenet': ImageNet's, on RGB in [0, 1] (torchvision's ``transforms.Normalize`` values), what torchvision's
  pretrained weights were trained on (``init_from`` a torchvision weights file, jaxssl/models/
  torchvision_weights.py). With the dataset's own statistics instead, such a backbone sees inputs shifted and
  scaled by the difference between the two (on DeepFashion small, but every BatchNorm statistic was measured on
  ImageNet-normalized inputs): its features and ImageNet logits are not those torchvision computes.
"""

from __future__ import annotations

import dataclasses

import ml_collections

NORMALIZATIONS = ('dataset', 'imagenet')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_normalize(data_cfg: ml_collections.ConfigDict) -> str:
  """The config's normalization; a name not in NORMALIZATIONS is one line with the choices."""
  normalize = data_cfg.get('normalize', 'dataset')
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"unknown normalization '{normalize}'; choose one of: {', '.join(NORMALIZATIONS)} "
                     '(set --config.data.normalize)')
  return normalize


def normalized(info, data_cfg: ml_collections.ConfigDict):
  """``info`` (a DatasetInfo) with the mean and std that ``data.normalize`` picks."""
  if check_normalize(data_cfg) == 'dataset':
    return info
  if info.input_shape[-1] != 3:
    raise ValueError(f"--config.data.normalize=imagenet standardizes RGB images, but {info.name} has "
                     f'{info.input_shape[-1]} channel(s): set --config.data.normalize=dataset')
  return dataclasses.replace(info, mean=IMAGENET_MEAN, std=IMAGENET_STD)
