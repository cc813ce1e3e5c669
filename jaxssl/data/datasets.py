"""Datasets addressed by name in the config, so a new one (DeepFashion, ...) never touches the trainer."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import ml_collections


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  input_shape: tuple[int, int, int]
  class_names: tuple[str, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  splits: tuple[str, ...]
  # (split, data config) -> a random-access source: len(), __getitem__ (and ideally __getitems__) giving
  # dicts with 'image' (uint8 HWC) and, for labelled data, 'label'.
  load: Callable[[str, ml_collections.ConfigDict], Any]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def tfds_data_dir(data_cfg: ml_collections.ConfigDict) -> str:
  """Where prepared datasets live: the config, else $TFDS_DATA_DIR, else tfds' default."""
  return os.path.expanduser(data_cfg.get('data_dir') or os.environ.get('TFDS_DATA_DIR')
                            or '~/tensorflow_datasets')


def _fashion_mnist() -> DatasetInfo:
  from jaxssl.data import fashion_mnist as fm  # pylint: disable=import-outside-toplevel

  def load(split, data_cfg):
    return fm.data_source(split, data_dir=tfds_data_dir(data_cfg), source_dir=data_cfg.get('source_dir') or None)

  return DatasetInfo('fashion_mnist', (28, 28, 1), tuple(fm.CLASS_NAMES), (fm.MEAN,), (fm.STD,),
                     ('train', 'test'), load)


DATASETS: dict[str, Callable[[], DatasetInfo]] = {
    'fashion_mnist': _fashion_mnist,
}


def get_dataset(name: str) -> DatasetInfo:
  if name not in DATASETS:
    raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))} "
                     '(set --config.data.name)')
  return DATASETS[name]()


def load_split(info: DatasetInfo, split: str, data_cfg: ml_collections.ConfigDict, limit: int = 0):
  if split not in info.splits:
    raise ValueError(f"dataset '{info.name}' has no split '{split}'; it has: {', '.join(info.splits)}")
  from jaxssl.data.subsets import IndexedSubset  # pylint: disable=import-outside-toplevel
  source = info.load(split, data_cfg)
  return IndexedSubset(source, range(min(limit, len(source)))) if limit else source  # quick runs, tests
