"""Any tfds dataset prepared in ArrayRecord, named in the config: ``--config.data.name=tfds:cifar10``.

The name is ``tfds:NAME[/CONFIG][:VERSION]``, tfds' own ``name/config:version`` after the prefix
(``tfds:cifar10``, ``tfds:cifar10:3.0.2``, ``tfds:imagenette/160px``, ``tfds:imagenette/160px:1.0.0``); without a
config tfds takes the dataset's default one, without a version the newest prepared one.

The dataset is read from its prepared files alone (tfds' read-only builder: dataset_info.json and features.json),
under ``data.data_dir``, else $TFDS_DATA_DIR, else ~/tensorflow_datasets. Reading needs no TensorFlow and no
builder code, so a dataset prepared elsewhere (``tfds build NAME --file_format=array_record``, which does need
TensorFlow for most tfds datasets) is read here as copied. Nothing is ever downloaded or prepared here.

From the dataset's (top-level) features: the image is ``data.image_key``, else the feature named 'image' (an Image,
or a uint8 Tensor of rank 2 or 3), else the first Image feature by name; the label is ``data.label_key``, else the
ClassLabel named 'label', else the only ClassLabel (none: the dataset is unlabelled; several: name one). Class names
come from that ClassLabel, the splits from the dataset's info. A split may carry tfds' slice syntax: ``train[:90%]``
and ``train[90%:]`` carve a validation split from the training records.

Images of one fixed size pass through. Where images vary in size (tf_flowers, imagenette), or where
``data.image_size`` > 0 asks for another size, each image is centre-cropped to a square of its shorter side and
resized to ``image_size`` x ``image_size`` as it is read (PIL, bilinear with antialiasing): the same as resizing the
shorter side to ``image_size`` then taking the centre crop. Grey images stay one channel, RGB three; an alpha
channel is dropped, and a dataset whose channel count varies is read as RGB.

Normalisation: per-channel mean and std of up to 10,000 training images (a fixed-seed sample of
``data.train_split``, as resized), computed once and cached in ``jaxssl_stats.json`` beside the prepared files
(computed at every start where that folder is read-only). Measured on the 2-core CPU (2026-11-30): 10,000 32x32
PNGs in 2.9 s, ~400x400 JPEGs resized to 160 at 4.9 ms each (~50 s for 10,000): worth caching.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

import ml_collections
import numpy as np

from jaxssl.data.paths import tfds_data_dir
from jaxssl.data.sources import read_records
from jaxssl.data.splits import split_keys

PREFIX = 'tfds:'
GRAMMAR = 'tfds:NAME[/CONFIG][:VERSION]'
_NAME = re.compile(r'(?P<name>[a-z][a-z0-9_]*)(?:/(?P<config>[A-Za-z0-9][\w.+-]*))?(?::(?P<version>\d+\.\d+\.\d+))?')
STATS_FILE = 'jaxssl_stats.json'
STATS_IMAGES = 10_000   # images sampled for the mean and std (all of a smaller split)
STATS_SEED = 0
_BUILD = '--file_format=array_record'


class TfdsError(ValueError):
  """A tfds dataset named in the config cannot be read as asked: the message says why and what to run or set.
  Listed in jaxssl/cli.py's one-line errors."""


def is_tfds_name(name: str) -> bool:
  return name.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class TfdsName:
  """A parsed ``tfds:NAME[/CONFIG][:VERSION]``."""
  name: str
  config: str | None = None
  version: str | None = None

  @property
  def tfds_name(self) -> str:
    """The name as tfds spells it (``name/config:version``): for tfds' loaders and the ``tfds build`` command."""
    return self.name + (f'/{self.config}' if self.config else '') + (f':{self.version}' if self.version else '')


def parse_name(value: str) -> TfdsName:
  """``tfds:cifar10``, ``tfds:imagenette/160px:1.0.0``, ... -> its parts; anything else is one line with the
  grammar."""
  m = _NAME.fullmatch(value[len(PREFIX):]) if is_tfds_name(value) else None
  if not m:
    raise TfdsError(f"--config.data.name='{value}' is not a tfds dataset name: write {GRAMMAR}, NAME in tfds' "
                    'snake_case (tfds:cifar10, tfds:cifar10:3.0.2, tfds:imagenette/160px:1.0.0)')
  return TfdsName(m['name'], m['config'], m['version'])


def _variants(folder) -> list[str]:
  """The prepared CONFIG:VERSION (or VERSION) folders under a dataset's folder, as a name spells them."""
  out = []
  for child in sorted(folder.iterdir()):
    if child.name.startswith('.') or not child.is_dir():   # .config: tfds' metadata
      continue
    if re.fullmatch(r'\d+\.\d+\.\d+', child.name):
      out.append(child.name)
    else:
      out += [f'{child.name}:{v.name}' for v in sorted(child.iterdir()) if re.fullmatch(r'\d+\.\d+\.\d+', v.name)]
  return out


def _build_command(spec: TfdsName, data_dir: str) -> str:
  return f'tfds build {spec.tfds_name} --data_dir={data_dir} {_BUILD}'


def open_builder(spec: TfdsName, data_dir: str):
  """The read-only builder of the prepared files, whether or not tfds has code for the dataset; one line where
  they are absent or not in ArrayRecord."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from etils import epath  # pylint: disable=import-outside-toplevel  # tfds' paths: local or remote
  from tensorflow_datasets.core import read_only_builder  # pylint: disable=import-outside-toplevel
  try:
    builder = read_only_builder.builder_from_files(spec.tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    try:
      tfds.builder_cls(spec.name)
      known = ''
    except Exception:  # pylint: disable=broad-except  # not in tfds' catalogue (or its code fails to import)
      known = f" (tfds' catalogue has no '{spec.name}': a dataset of your own is built from its builder's folder)"
    folder = epath.Path(data_dir) / spec.name
    if folder.is_dir():  # prepared, but in another config or version than the one named
      known += f" (prepared there: {', '.join(_variants(folder)) or 'nothing'})"
    raise TfdsError(f"tfds dataset '{spec.tfds_name}' is not prepared under {data_dir}{known}; prepare it where "
                    f'TensorFlow is installed with: {_build_command(spec, data_dir)}  (or set --config.data.data_dir '
                    'or $TFDS_DATA_DIR to where it is prepared)') from None
  formats = {f.value for f in builder.info.available_file_formats()}
  if 'array_record' not in formats:
    raise TfdsError(f"tfds dataset '{spec.tfds_name}' is prepared in {builder.data_dir} as "
                    f"{', '.join(sorted(formats)) or 'an unknown format'}, which cannot be read at random; where "
                    'TensorFlow is installed, convert it with: tfds convert_format '
                    f'--dataset_version_dir={builder.data_dir} --out_file_format=array_record  or rebuild it with: '
                    f'{_build_command(spec, data_dir)} --overwrite')
  return builder


# ----------------------------------------------------------------------------------------------- features


def _image_like(feature) -> bool:
  """An Image feature, or a uint8 Tensor of rank 2 or 3 (images stored raw, as jaxssl_fashion_mnist's)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if isinstance(feature, tfds.features.Image):
    return True
  return (isinstance(feature, tfds.features.Tensor) and np.dtype(feature.np_dtype) == np.uint8
          and len(feature.shape) in (2, 3))


def find_keys(features, spec_name: str, image_key: str = '', label_key: str = '') -> tuple[str, str | None]:
  """(image key, label key or None) among the top-level ``features``, by the rules of the module docstring."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  keys = sorted(features)   # tfds does not keep the order the builder gave them in
  images = [k for k in keys if _image_like(features[k])]
  labels = [k for k in keys if isinstance(features[k], tfds.features.ClassLabel)]
  if image_key:
    if image_key not in images:
      raise TfdsError(f"tfds dataset '{spec_name}' has no image feature '{image_key}'; its image features: "
                      f"{', '.join(images) or 'none'} (set --config.data.image_key)")
  elif 'image' in images:
    image_key = 'image'
  else:
    image_key = next((k for k in images if isinstance(features[k], tfds.features.Image)), '')
    if not image_key:
      raise TfdsError(f"tfds dataset '{spec_name}' has no image feature (its features: {', '.join(keys)}); "
                      'jaxssl reads an Image feature or a uint8 Tensor of rank 2 or 3')
  if label_key:
    if label_key not in labels:
      raise TfdsError(f"tfds dataset '{spec_name}' has no ClassLabel feature '{label_key}'; its ClassLabel "
                      f"features: {', '.join(labels) or 'none'} (set --config.data.label_key)")
    return image_key, label_key
  if 'label' in labels or len(labels) == 1:
    return image_key, 'label' if 'label' in labels else labels[0]
  if labels:
    raise TfdsError(f"tfds dataset '{spec_name}' has several ClassLabel features ({', '.join(labels)}) and none "
                    "named 'label': choose one with --config.data.label_key")
  return image_key, None


def _stored_shape(feature) -> tuple[int | None, int | None, int | None]:
  shape = tuple(feature.shape)
  return (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


def output_shape(feature, image_size: int, spec_name: str) -> tuple[int, int, int]:
  """The (h, w, c) jaxssl reads: the stored size where it is fixed and image_size is 0, else image_size square;
  one or three channels."""
  if np.dtype(feature.np_dtype) != np.uint8:
    raise TfdsError(f"tfds dataset '{spec_name}': its images are {np.dtype(feature.np_dtype)}; jaxssl reads uint8")
  h, w, c = _stored_shape(feature)
  if image_size < 0:
    raise TfdsError(f'--config.data.image_size={image_size} must be >= 0 (0 = the stored size)')
  if image_size == 0 and (h is None or w is None):
    raise TfdsError(f"tfds dataset '{spec_name}' has images of varying size: set --config.data.image_size=S to read "
                    'them centre-cropped and resized to S x S')
  channels = {1: 1, 2: 1, 3: 3, 4: 3, None: 3}.get(c)   # 2 and 4: grey or RGB with alpha, which is dropped
  if channels is None:
    raise TfdsError(f"tfds dataset '{spec_name}': its images have {c} channels; jaxssl reads 1 (grey) or 3 (RGB)")
  return (image_size or h, image_size or w, channels)


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
  """The centre square of the shorter side, resized to size x size (PIL bilinear, antialiased when shrinking)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  image = image[top:top + side, left:left + side]
  if side == size:
    return image
  grey = image.shape[-1] == 1
  resized = Image.fromarray(image[..., 0] if grey else image).resize((size, size), Image.Resampling.BILINEAR)
  out = np.asarray(resized)
  return out[..., None] if grey else out


class TfdsImages:
  """A tfds ArrayRecord source as jaxssl reads it: records {'image': uint8 HWC of ``shape``, 'label' (where the
  dataset has one), 'index' (the position in the split)}; other features stay behind."""

  def __init__(self, source, image_key: str, label_key: str | None, shape: tuple[int, int, int]):
    self.source, self.image_key, self.label_key, self.shape = source, image_key, label_key, tuple(shape)

  def __len__(self) -> int:
    return len(self.source)

  def image(self, stored) -> np.ndarray:
    image = np.asarray(stored)
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] in (2, 4):      # drop alpha
      image = image[..., :-1]
    if image.shape[-1] == 1 and self.shape[-1] == 3:
      image = np.repeat(image, 3, axis=-1)
    if image.shape[:2] != self.shape[:2]:
      image = square_resize(image, self.shape[0])
    return image

  def _record(self, record: dict, index: int) -> dict[str, Any]:
    out = {'image': self.image(record[self.image_key]), 'index': index}
    if self.label_key:
      out['label'] = int(record[self.label_key])
    return out

  def __getitem__(self, index):
    return self._record(self.source[int(index)], int(index))

  def __getitems__(self, indices):
    indices = [int(i) for i in indices]
    return [self._record(r, i) for r, i in zip(read_records(self.source, indices), indices)]


# ------------------------------------------------------------------------------------------------- splits


def check_split(builder, spec_name: str, split: str, key: str) -> None:
  """``split`` is one of the dataset's splits, optionally sliced (``train[:90%]``); one line otherwise."""
  names = tuple(builder.info.splits)
  if split.split('[', 1)[0] not in names:
    raise TfdsError(f"tfds dataset '{spec_name}' has no split '{split}'; it has: {', '.join(names)} "
                    f"(set --config.data.{key}; a slice such as '{names[0] if names else 'train'}[:90%]' carves a "
                    'split from another)')
  try:
    n = builder.info.splits[split].num_examples
  except Exception as e:  # pylint: disable=broad-except  # tfds' slice parser raises several kinds
    raise TfdsError(f"tfds dataset '{spec_name}': split '{split}' is not a valid tfds split ({' '.join(str(e).split())}"
                    f"); write e.g. 'train', 'train[:90%]', 'train[90%:]' or 'train[:1000]' (--config.data.{key})"
                    ) from None
  if not n:
    raise TfdsError(f"tfds dataset '{spec_name}': split '{split}' holds no records (--config.data.{key})")


def check_splits(data_cfg: ml_collections.ConfigDict) -> None:
  """Part of the config check: the name's grammar, and, where the dataset is prepared, its splits. An unprepared
  dataset is left to :func:`describe`, whose error says how to prepare it."""
  spec = parse_name(data_cfg.name)
  try:
    builder = open_builder(spec, tfds_data_dir(data_cfg))
  except TfdsError:
    return
  for key in split_keys(data_cfg):
    check_split(builder, spec.tfds_name, data_cfg.get(key), key)


# ------------------------------------------------------------------------------------------- statistics


def pixel_stats(source, limit: int = STATS_IMAGES, seed: int = STATS_SEED) -> tuple[list[float], list[float], int]:
  """Per-channel mean and std on [0, 1] of ``limit`` records of ``source`` chosen with ``seed`` (all of a
  smaller one), and how many."""
  n = len(source)
  indices = np.arange(n) if n <= limit else np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
  counts = 0   # per channel, how many pixels have each of the 256 values: exact sums without float copies
  for start in range(0, len(indices), 256):
    images = np.stack([r['image'] for r in read_records(source, indices[start:start + 256])])
    counts = counts + np.stack([np.bincount(images[..., ch].ravel(), minlength=256)
                                for ch in range(images.shape[-1])])
  values = np.arange(256) / 255.0
  pixels = counts.sum(1)
  mean = counts @ values / pixels
  std = np.sqrt(np.maximum(counts @ np.square(values) / pixels - np.square(mean), 1e-12))
  return mean.tolist(), std.tolist(), len(indices)


def cached_stats(builder, source, key: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """:func:`pixel_stats` of ``source``, cached under ``key`` in jaxssl_stats.json beside the prepared files."""
  from etils import epath  # pylint: disable=import-outside-toplevel  # tfds' paths: local or remote
  path = epath.Path(builder.data_dir) / STATS_FILE
  try:
    cache = json.loads(path.read_text(encoding='utf-8'))
  except (OSError, ValueError):
    cache = {}
  if key in cache:
    return tuple(cache[key]['mean']), tuple(cache[key]['std'])
  start = time.time()
  mean, std, n = pixel_stats(source)
  cache[key] = {'mean': mean, 'std': std, 'images': n}
  tmp = path.parent / f'.{STATS_FILE}.{time.time_ns()}'
  try:
    tmp.write_text(json.dumps(cache, indent=1), encoding='utf-8')
    tmp.replace(path)   # whole or not at all, for processes that start together
    where = f'cached in {path}'
  except OSError as e:   # a read-only copy of the data: computed at every start
    where = f'not cached: {type(e).__name__} writing {path}'
    if tmp.exists():
      tmp.unlink()
  from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
  log(f'pixel mean/std of {n} training images computed in {time.time() - start:.1f} s ({where})')
  return tuple(mean), tuple(std)


# ----------------------------------------------------------------------------------------------- dataset


def describe(name: str, data_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields of jaxssl's DatasetInfo (jaxssl/data/datasets.py) but the name: input_shape, class_names, mean,
  std, splits, load."""
  spec = parse_name(name)
  builder = open_builder(spec, tfds_data_dir(data_cfg))
  features = builder.info.features
  image_key, label_key = find_keys(features, spec.tfds_name, data_cfg.get('image_key', ''),
                                   data_cfg.get('label_key', ''))
  shape = output_shape(features[image_key], int(data_cfg.get('image_size', 0) or 0), spec.tfds_name)
  splits = tuple(builder.info.splits)

  def load(split: str, cfg: ml_collections.ConfigDict):
    del cfg  # the dataset, keys and size were resolved from the same data config when it was described
    return TfdsImages(builder.as_data_source(split=split, file_format='array_record'), image_key, label_key, shape)

  stats_split = data_cfg.get('train_split') or ('train' if 'train' in splits else splits[0])
  check_split(builder, spec.tfds_name, stats_split, 'train_split')
  mean, std = cached_stats(builder, load(stats_split, data_cfg),
                           f"{stats_split}|{image_key}|{'x'.join(map(str, shape))}|{STATS_IMAGES}|{STATS_SEED}")
  class_names = tuple(features[label_key].names) if label_key else ()
  no_labels = '' if label_key else (f'{spec.tfds_name} has no class label feature (ClassLabel); set '
                                     '--config.data.label_key if one of its features is the label')
  return {'input_shape': shape, 'class_names': class_names, 'mean': mean, 'std': std, 'splits': splits,
          'load': load, 'no_labels': no_labels}
