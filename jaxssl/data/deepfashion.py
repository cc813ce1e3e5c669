"""DeepFashion as TensorFlow-free tfds datasets (ArrayRecord, random access), prepared once per image size.

One builder, ``jaxssl_deepfashion``, serves the three annotation layouts of
:mod:`jaxssl.data.deepfashion_layouts` (the official Category and Attribute Prediction Benchmark, the course
attribute-challenge layout, an image folder with CSV annotations). Images are decoded, optionally cropped to
their bounding box, resized to ``image_size`` x ``image_size`` and re-encoded (JPEG, or PNG for lossless) at
prepare time, so training never touches the originals. Resizing ignores the aspect ratio; every record keeps
``image_hw``, the size before resizing, so a training crop can restore it (the multi-task task crops the
shorter side, as the seed experiments did).

A missing or unreadable image file is counted, logged and skipped at prepare time, never an error in the
middle of an epoch; the list is in ``skipped_images.json`` beside the prepared data and in its metadata.

Records: ``image`` uint8 [S, S, 3]; ``image_hw`` int32 [2]; ``category`` int64 (0-based, -1 = none);
``attributes`` uint8 [A] multi-hot; ``has_attributes`` uint8 (0: the split carries no attribute labels);
``file_path`` str (as in the annotation files; predictions are written with it); ``index`` int64 (position in
the split).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from jaxssl.data import deepfashion_layouts as layouts
from jaxssl.data.paths import tfds_data_dir
from jaxssl.data.prepared import RuntimeConfiguredBuilder, SplitProgress, is_prepared, prepare_once, write_skipped
from jaxssl.data.prepared import skipped_images  # pylint: disable=unused-import  # this module's API too
from jaxssl.runlog import log

ENV_VARS = {'benchmark': 'JAXSSL_DEEPFASHION_DIR', 'attr_challenge': 'JAXSSL_DEEPFASHION_ATTR_DIR', 'csv': None}
FORMATS = {'jpeg': 'JPEG', 'png': 'PNG'}
JPEG_QUALITY = 90          # the originals are JPEGs of about this quality; 95 doubles the size for nothing
_CHUNK = 512               # images decoded concurrently, then written in order
_REPORTED = 5              # skipped paths named in the log (all are in skipped_images.json)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
DeepFashion cannot be downloaded automatically (its licence needs an agreement). From
http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/AttributePrediction.html get the "Category and Attribute
Prediction Benchmark": Img/img.zip, the Anno/ folder and the Eval/ folder. Unzip img.zip and arrange one folder as

  DIR/img/<product folder>/img_00000001.jpg ...   (img.zip unpacked here, or DIR/Img/img/...)
  DIR/Anno/list_category_cloth.txt
  DIR/Anno/list_category_img.txt
  DIR/Anno/list_attr_cloth.txt
  DIR/Anno/list_attr_img.txt
  DIR/Anno/list_bbox.txt
  DIR/Eval/list_eval_partition.txt

then pass --config.data.source_dir=DIR or set $JAXSSL_DEEPFASHION_DIR=DIR. The first run prepares the
289,222 images once into --config.data.data_dir (about 12 KB each as 256 px JPEGs: 3.5 GB)."""

_HOW_TO = {
    'benchmark': MANUAL_DOWNLOAD_INSTRUCTIONS,
    'attr_challenge': ('Point --config.data.source_dir (or $JAXSSL_DEEPFASHION_ATTR_DIR) at a folder with img/ and '
                       'split/ (train.txt, train_attr.txt, list_attr_cloth.txt), e.g. '
                       '../shared/data/deepfashion_attr_sample.'),
    'csv': ('Point --config.data.source_dir at a folder holding the images and train.csv / val.csv / test.csv '
            '(columns file_path, category, attributes), see jaxssl/data/deepfashion_layouts.py.'),
}


class DataNotFoundError(ValueError):
  """The DeepFashion folder is not where the config says: the message says what to put where."""


def find_source_dir(layout: str, source_dir: str | None) -> pathlib.Path:
  env = ENV_VARS[layout]
  given = source_dir or (os.environ.get(env) if env else None)
  if not given:
    where = '--config.data.source_dir' + (f' or ${env}' if env else '')
    raise DataNotFoundError(f'no DeepFashion folder given for the {layout} layout: set {where}.\n{_HOW_TO[layout]}')
  return pathlib.Path(given).expanduser().resolve()


# --------------------------------------------------------------------------------------------------- images


@dataclasses.dataclass
class Skipped:
  path: str
  reason: str


def load_image(path, size: int, bbox=None) -> tuple[np.ndarray, tuple[int, int]]:
  """RGB uint8 [size, size, 3] of a file, cropped to ``bbox`` (x1 y1 x2 y2, clipped to the image; ignored when
  empty after clipping), and the (height, width) it had before resizing. Raises OSError/ValueError for a
  missing, truncated or undecodable file."""
  with Image.open(path) as im:
    im = im.convert('RGB')  # decodes now: a truncated file raises here, not later
  if bbox is not None and min(bbox) >= 0:
    x1, y1 = max(0, int(bbox[0])), max(0, int(bbox[1]))
    x2, y2 = min(im.width, int(bbox[2])), min(im.height, int(bbox[3]))
    if x2 > x1 and y2 > y1:
      im = im.crop((x1, y1, x2, y2))
  hw = (im.height, im.width)
  # PIL's bilinear resize is antialiased. (no-member: pylint does not see PIL's resampling constants.)
  return np.asarray(im.resize((size, size), Image.BILINEAR)), hw  # pylint: disable=no-member


def _prepare_one(path: pathlib.Path, size: int, bbox, fmt: str):
  try:
    pixels, hw = load_image(path, size, bbox)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    reason = 'missing' if isinstance(e, FileNotFoundError) else f'unreadable: {type(e).__name__}: {e}'
    return Skipped(str(path), reason)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=FORMATS[fmt], **({'quality': JPEG_QUALITY} if fmt == 'jpeg' else {}))
  flat = pixels.reshape(-1, 3).astype(np.float64) / 255.0
  return buf.getvalue(), hw, flat.sum(0), np.square(flat).sum(0)


# -------------------------------------------------------------------------------------------------- builder


class DeepFashionConfig(tfds.core.BuilderConfig):
  """What a prepared copy depends on; its name says so, so several sizes live side by side in one data_dir."""

  def __init__(self, *, layout: str, source_dir: pathlib.Path, image_size: int, crop_bbox: bool,
               image_format: str):
    if layout not in layouts.LAYOUTS:
      raise ValueError(f"unknown DeepFashion layout '{layout}'; choose one of: {', '.join(layouts.LAYOUTS)}")
    if image_format not in FORMATS:
      raise ValueError(f"unknown image_format '{image_format}'; choose one of: {', '.join(FORMATS)} "
                       '(set --config.data.image_format)')
    if not 16 <= image_size <= 1024:
      raise ValueError(f'--config.data.image_size={image_size} must be between 16 and 1024 pixels')
    # The folder's path is part of the name: two CSV folders (or the sample and the benchmark) never collide.
    source_id = hashlib.sha1(str(source_dir).encode()).hexdigest()[:8]
    super().__init__(name=f"{layout}_{image_size}px{'_bbox' if crop_bbox else ''}_{image_format}_{source_id}",
                     description=f'{layout} layout from {source_dir}, {image_size} px'
                                 f"{', cropped to the bounding box' if crop_bbox else ''}, {image_format}")
    self.layout, self.source_dir, self.image_size = layout, source_dir, int(image_size)
    self.crop_bbox, self.image_format = bool(crop_bbox), image_format


class DeepFashion(RuntimeConfiguredBuilder):
  """DeepFashion images with category, multi-hot attributes and file paths, in annotation order."""

  name = 'jaxssl_deepfashion'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Benchmark, attribute-challenge and CSV layouts; resized at prepare time.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description='DeepFashion Category and Attribute Prediction (or a subset in another layout).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(s, s, 3), encoding_format=self.builder_config.image_format),
            'image_hw': tfds.features.Tensor(shape=(2,), dtype=np.int32),
            'category': tfds.features.Scalar(dtype=np.int64),
            # The attribute count is known only from the annotations: a 1-D tensor of any length.
            'attributes': tfds.features.Tensor(shape=(None,), dtype=np.uint8, encoding='bytes'),
            'has_attributes': tfds.features.Scalar(dtype=np.uint8),
            'file_path': tfds.features.Text(),
            'index': tfds.features.Scalar(dtype=np.int64),
        }),
        disable_shuffling=True,  # keys are annotation positions: records keep the official order
        metadata=tfds.core.MetadataDict(),
        homepage='http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion.html',
        citation='Liu, Luo, Qiu, Wang, Tang. DeepFashion: Powering Robust Clothes Recognition and Retrieval '
                 'with Rich Annotations. CVPR 2016.',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # manual data: the folder is the config's
    cfg = self.builder_config
    ann = layouts.read_annotations(cfg.layout, cfg.source_dir)
    meta = self.info.metadata
    meta.update({
        'layout': cfg.layout, 'source_dir': str(cfg.source_dir), 'image_size': cfg.image_size,
        'crop_bbox': cfg.crop_bbox, 'image_format': cfg.image_format,
        'category_names': list(ann.category_names), 'category_types': list(ann.category_types),
        'category_base': ann.category_base, 'attribute_names': list(ann.attribute_names),
        'attribute_types': list(ann.attribute_types), 'exclusive_groups': ann.exclusive_groups,
        'notes': list(ann.notes), 'splits': {}})
    return {split: self._generate_examples(split, ann.splits[split], ann.image_root) for split in ann.splits}

  def _generate_examples(self, split: str, ann: layouts.SplitAnnotations, image_root: pathlib.Path):
    cfg = self.builder_config
    skipped, written = [], 0
    positives = np.zeros(ann.attributes.shape[1], np.int64)
    categories = np.zeros(max(1, len(self.info.metadata['category_names'])), np.int64)
    labelled = 0
    pixel_sum, pixel_sq, pixels = np.zeros(3), np.zeros(3), 0
    progress = SplitProgress(f'DeepFashion {cfg.layout}', split, len(ann))
    with concurrent.futures.ThreadPoolExecutor(self._workers) as pool:  # PIL releases the GIL while decoding
      for start in range(0, len(ann), _CHUNK):
        rows = range(start, min(len(ann), start + _CHUNK))
        results = pool.map(lambda i: _prepare_one(image_root / ann.paths[i], cfg.image_size,
                                                  ann.bbox[i] if cfg.crop_bbox else None, cfg.image_format), rows)
        for i, result in zip(rows, results):
          if isinstance(result, Skipped):
            skipped.append({'file_path': ann.paths[i], 'reason': result.reason})
            continue
          encoded, hw, s, sq = result
          pixel_sum, pixel_sq, pixels = pixel_sum + s, pixel_sq + sq, pixels + cfg.image_size ** 2
          if ann.has_attributes[i]:
            positives += ann.attributes[i]
            labelled += 1
          if ann.category[i] >= 0:
            categories[ann.category[i]] += 1
          yield i, {'image': encoded, 'image_hw': np.asarray(hw, np.int32), 'category': int(ann.category[i]),
                    'attributes': ann.attributes[i], 'has_attributes': int(ann.has_attributes[i]),
                    'file_path': ann.paths[i], 'index': written}
          written += 1
        progress.update(rows.stop)
    progress.finish(written, len(skipped))
    mean = pixel_sum / max(pixels, 1)
    std = np.sqrt(np.maximum(pixel_sq / max(pixels, 1) - np.square(mean), 0.0))
    self.info.metadata['splits'][split] = {
        'annotated': len(ann), 'written': written, 'skipped': skipped, 'attribute_labelled': labelled,
        'attribute_positives': positives.tolist(), 'category_counts': categories.tolist(),
        'mean': mean.round(4).tolist(), 'std': std.round(4).tolist()}
    if skipped:
      logging.warning('DeepFashion %s: skipped %d of %d images (missing or unreadable), e.g. %s; all are listed '
                      'in skipped_images.json beside the prepared data', split, len(skipped), len(ann),
                      ', '.join(f"{s['file_path']} ({s['reason']})" for s in skipped[:_REPORTED]))


def builder(layout: str, data_cfg) -> DeepFashion:
  """The builder a data config names (``source_dir``, ``image_size``, ``crop_bbox``, ``image_format``,
  ``data_dir``, ``prepare_workers``), prepared on first use."""
  config = DeepFashionConfig(layout=layout, source_dir=find_source_dir(layout, data_cfg.get('source_dir') or None),
                             image_size=int(data_cfg.get('image_size', 0) or 227),
                             crop_bbox=bool(data_cfg.get('crop_bbox', False)),
                             image_format=data_cfg.get('image_format', '') or 'jpeg')
  b = DeepFashion(config=config, data_dir=tfds_data_dir(data_cfg), workers=int(data_cfg.get('prepare_workers', 0)))
  # is_prepared needs the final version folder: an interrupted prepare is never taken for a finished one.
  if not is_prepared(b):
    if not config.source_dir.is_dir():
      raise DataNotFoundError(f'{config.source_dir} (the {layout} folder) does not exist.\n{_HOW_TO[layout]}')
    log(f'DeepFashion {layout} {config.source_dir}: preparing once at {config.image_size} px'
        f'{" (bounding boxes)" if config.crop_bbox else ""} into {b.data_dir}')
    b, made = prepare_once(b, lambda: DeepFashion(config=config, data_dir=tfds_data_dir(data_cfg)))
    if made:
      write_skipped(b, 'annotated')
  return b
