"""Datasets addressed by name in the config, so a new one (DeepFashion, ...) never touches the trainer."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from jaxssl.data.deepfashion_layouts import SPLITS as DEEPFASHION_SPLITS, AnnotationError
from jaxssl.data.paths import tfds_data_dir
from jaxssl.data.sources import IndexedSubset, PaddedImages
from jaxssl.data.splits import split_keys

FASHION_MNIST_SPLITS = ('train', 'test')  # jaxssl/data/fashion_mnist.py's SPLITS, without importing tfds


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know of a dataset: shapes, classes, normalisation, splits and a loader."""
  name: str
  input_shape: tuple[int, int, int]
  class_names: tuple[str, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  splits: tuple[str, ...]
  # (split, data config) -> a random-access source: len(), __getitem__ (and ideally __getitems__) giving
  # dicts with 'image' (uint8 HWC) and, for labelled data, 'label'.
  load: Callable[[str, ml_collections.ConfigDict], Any]
  # Multi-label data (DeepFashion; records also carry 'category', 'attributes', 'has_attributes', 'image_hw',
  # 'file_path'): attribute names, the group (type) of each, whether every image has exactly one attribute per
  # group, and the training split's fraction of positives per attribute (positive weighting, initial bias).
  attribute_names: tuple[str, ...] = ()
  attribute_groups: tuple[int, ...] = ()
  exclusive_groups: bool = False
  attribute_frequency: tuple[float, ...] = ()
  category_base: int = 0   # how the dataset's own files number categories (predictions are written so)
  # A dataset without class labels (a flat image folder): why, and what to do; the one-line error of a task that
  # needs labels starts with it.
  no_labels: str = ''
  # Splits the dataset could have but lacks, each with why and what to do ((split, reason) pairs: an image folder
  # too small to hold its val or test images out of train); load_split's one-line error gives the reason.
  missing_splits: tuple[tuple[str, str], ...] = ()

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _fashion_mnist_size(data_cfg: ml_collections.ConfigDict) -> int:
  """The side of the images a Fashion-MNIST run sees: 28, or ``data.pad_to`` (ValueError where it would crop, and
  for a ``data.image_size`` other than 0 or 28: the other datasets' resize, which Fashion-MNIST does not read)."""
  asked = int(data_cfg.get('image_size', 0) or 0)
  if asked not in (0, 28):
    raise ValueError(f'--config.data.image_size={asked}: Fashion-MNIST images are 28x28 and are not resized; '
                     + (f'--config.data.pad_to={asked} zero-pads them to {asked}x{asked}, ' if asked > 28 else '')
                     + 'leave data.image_size at 0')
  size = int(data_cfg.get('pad_to', 0) or 28)
  if size < 28:
    raise ValueError(f'--config.data.pad_to={size}: Fashion-MNIST images are 28x28 and can only be padded; '
                     'give a size of at least 28 (32 for the LeNet/CIFAR input size), or 0 for none')
  return size


def _fashion_mnist(data_cfg: ml_collections.ConfigDict) -> DatasetInfo:
  """28x28x1, or zero-padded to ``data.pad_to`` (e.g. 32) pixels."""
  from jaxssl.data import fashion_mnist as fm  # pylint: disable=import-outside-toplevel
  size = _fashion_mnist_size(data_cfg)

  def load(split, data_cfg):
    source = fm.data_source(split, data_dir=tfds_data_dir(data_cfg), source_dir=data_cfg.get('source_dir') or None)
    return source if size == 28 else PaddedImages(source, size)

  return DatasetInfo('fashion_mnist', (size, size, 1), tuple(fm.CLASS_NAMES), (fm.MEAN,), (fm.STD,),
                     FASHION_MNIST_SPLITS, load)


def _deepfashion(layout: str, name: str) -> Callable[[ml_collections.ConfigDict], DatasetInfo]:
  """A DeepFashion layout (jaxssl/data/deepfashion.py): prepared on first use at ``data.image_size``, so its
  names, splits and statistics come from the prepared copy."""

  def make(data_cfg: ml_collections.ConfigDict) -> DatasetInfo:
    from jaxssl.data import deepfashion as df  # pylint: disable=import-outside-toplevel
    meta = df.builder(layout, data_cfg).info.metadata
    splits = meta['splits']
    stats = splits.get('train') or next(iter(splits.values()))  # pixel statistics of the training images
    positives = np.asarray(stats['attribute_positives'], np.float64)

    def load(split, cfg):
      return df.builder(layout, cfg).as_data_source(split=split)

    size = int(meta['image_size'])
    return DatasetInfo(
        name, (size, size, 3), tuple(meta['category_names']), tuple(stats['mean']), tuple(stats['std']),
        tuple(splits), load, attribute_names=tuple(meta['attribute_names']),
        attribute_groups=tuple(meta['attribute_types']), exclusive_groups=bool(meta['exclusive_groups']),
        attribute_frequency=tuple((positives / max(stats['attribute_labelled'], 1)).tolist()),
        category_base=int(meta['category_base']))

  return make


def _image_folder(data_cfg: ml_collections.ConfigDict) -> DatasetInfo:
  """Your own images (jaxssl/data/image_folder.py): the layout read from the folder, prepared on first use."""
  from jaxssl.data import image_folder  # pylint: disable=import-outside-toplevel
  return DatasetInfo(**image_folder.dataset_fields(data_cfg))


DATASETS: dict[str, Callable[[ml_collections.ConfigDict], DatasetInfo]] = {
    'fashion_mnist': _fashion_mnist,
    'deepfashion': _deepfashion('benchmark', 'deepfashion'),            # the official benchmark
    'deepfashion_attr': _deepfashion('attr_challenge', 'deepfashion_attr'),  # 6 exclusive groups, 26 attributes
    'image_csv': _deepfashion('csv', 'image_csv'),                      # image folder + annotation CSVs
    'image_folder': _image_folder,     # class folders, Kaggle's cat.1.jpg names, or flat (no labels)
}


# The split names each dataset can have, known before it is prepared, so that the config check rejects a misspelt
# split before anything is built. A DeepFashion folder may lack one of its layout's splits (a CSV folder without
# val.csv): load_split says so once the data is read.
SPLITS: dict[str, tuple[str, ...]] = {
    'fashion_mnist': FASHION_MNIST_SPLITS,
    'deepfashion': DEEPFASHION_SPLITS,
    'deepfashion_attr': DEEPFASHION_SPLITS,
    'image_csv': DEEPFASHION_SPLITS,
    'image_folder': ('train', 'val', 'test'),   # jaxssl/data/image_folder.py's SPLITS, without importing tfds
}


class NoLabelsError(ValueError):
  """Something that needs class labels (a labelled subset, k-NN, class features) on records without any (a flat
  image folder, an unlabelled tfds dataset, the DeepFashion attribute sample): one line, exit 2."""


def require_labels(record_or_batch, needed_by: str) -> None:
  """Raises NoLabelsError naming ``needed_by`` where the records carry no 'label'."""
  if 'label' not in record_or_batch:
    raise NoLabelsError(f"{needed_by} needs class labels, and this dataset's records have none (a flat image "
                        'folder, an unlabelled tfds dataset or an attribute-only DeepFashion layout): use a labelled '
                        'dataset (class folders, <label>.<id>.jpg names, a tfds dataset with a ClassLabel)')


class MissingSplitError(AnnotationError):
  """The dataset's files define no such split (a CSV folder without val.csv). An AnnotationError, so that the
  command reports it in one line, as it does the other faults of the annotation files."""


def check_splits(data_cfg: ml_collections.ConfigDict) -> None:
  """Part of the config check: ``data.train_split`` and ``data.eval_split`` are splits the dataset can have, and the
  options only one dataset reads are values it takes (Fashion-MNIST's ``pad_to``), so that a bad one is one line
  before anything is prepared."""
  if data_cfg.name == 'fashion_mnist':
    _fashion_mnist_size(data_cfg)
  if data_cfg.name.startswith('tfds:'):  # any prepared tfds dataset: its own splits (jaxssl/data/tfds_any.py)
    from jaxssl.data import tfds_any  # pylint: disable=import-outside-toplevel
    tfds_any.check_splits(data_cfg)
    return
  names = SPLITS.get(data_cfg.name)
  if names is None:
    return  # a dataset added to DATASETS without its split names: load_split checks them once it is read
  for key in split_keys(data_cfg):
    split = data_cfg.get(key)
    if split not in names:
      raise ValueError(f"dataset '{data_cfg.name}' has no split '{split}'; it has: {', '.join(names)} "
                       f'(set --config.data.{key})')


def get_dataset(name: str, data_cfg: ml_collections.ConfigDict | None = None) -> DatasetInfo:
  """``data_cfg`` (the config's ``data``) decides what a dataset built at prepare time looks like (DeepFashion's
  image size, Fashion-MNIST's ``pad_to``)."""
  if name.startswith('tfds:'):  # tfds:NAME[/CONFIG][:VERSION], any tfds dataset prepared in ArrayRecord
    from jaxssl.data import tfds_any  # pylint: disable=import-outside-toplevel
    return DatasetInfo(name, **tfds_any.describe(name, data_cfg if data_cfg is not None else
                                                 ml_collections.ConfigDict()))
  if name not in DATASETS:
    raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))} "
                     '(set --config.data.name)')
  data_cfg = data_cfg if data_cfg is not None else ml_collections.ConfigDict()
  with data_dir_errors(data_cfg):   # a dataset prepared on first use writes under data_dir
    return DATASETS[name](data_cfg)


def load_split(info: DatasetInfo, split: str, data_cfg: ml_collections.ConfigDict, limit: int = 0):
  base = split.split('[', 1)[0]
  if base not in info.splits:  # a tfds slice ('train[:90%]') of a split is read as tfds reads it
    why = dict(info.missing_splits).get(base)
    raise MissingSplitError(f"dataset '{info.name}' has no split '{split}'" + (
        f': {why}' if why else f"; it has: {', '.join(info.splits)} (choose one of them, or add the split to the "
                               "dataset's files)"))
  with data_dir_errors(data_cfg):   # Fashion-MNIST is prepared when its first split is read
    source = info.load(split, data_cfg)
  return IndexedSubset(source, range(min(limit, len(source)))) if limit else source  # quick runs, tests


@contextlib.contextmanager
def data_dir_errors(data_cfg: ml_collections.ConfigDict):
  """Inside, a disk's refusal to write under the prepared-data folder (``data.data_dir``, else $TFDS_DATA_DIR,
  else ~/tensorflow_datasets: a file there, read-only, full) is one line (jaxssl.runlog.WriteError) naming that
  folder's setting, not the workdir's. Other errors pass unchanged."""
  try:
    yield
  except OSError as e:
    data_dir = tfds_data_dir(data_cfg)
    where = e.filename if isinstance(e.filename, str) else ''
    from jaxssl import files  # pylint: disable=import-outside-toplevel
    if not where or not files.is_within(where, data_dir):
      raise
    from jaxssl.runlog import write_error  # pylint: disable=import-outside-toplevel  # imports jax: only on error
    setting = (f'--config.data.data_dir={data_cfg.get("data_dir")}' if data_cfg.get('data_dir') else
               f'$TFDS_DATA_DIR={os.environ["TFDS_DATA_DIR"]}' if os.environ.get('TFDS_DATA_DIR') else
               f'the default {data_dir}')
    err = write_error(e, where, elsewhere='point --config.data.data_dir (or $TFDS_DATA_DIR) at another folder',
                      context=f'datasets are prepared under {setting}: ')
    if err is None:
      raise
    raise err from e
