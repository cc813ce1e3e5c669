"""What the image-folder configs share (seed experiment 003: RotNet on Kaggle's Dogs vs. Cats, then a label-volume
study): the folder, its size, CifarNet. A library, not an experiment.

Variants: ``folder`` (default) reads ``--config.data.source_dir`` or ``$JAXSSL_IMAGE_FOLDER_DIR`` (any labelled
folder jaxssl/data/image_folder.py reads: class folders or Kaggle-style names); ``sample`` writes, once, a small
Kaggle-style folder of real photos (the DeepFashion attribute sample by sleeve type: long_sleeve 119,
short_sleeve 55, sleeveless 183) under ``$JAXSSL_CACHE_DIR`` (default ``~/.cache/jaxssl``) when the data are
first prepared, and reads it.
"""

from __future__ import annotations

import os
import pathlib

import ml_collections

from configs import common

VARIANTS = ('folder', 'sample')


def parse(arg: str | None, **more) -> ml_collections.ConfigDict:
  """``VARIANT[,quick]`` -> ``.variant``, ``.quick`` (and ``more``)."""
  return common.parse_arg(arg, variant=common.Choice(*VARIANTS), quick=False, **more)


def sample_folder() -> str:
  """Where ``:sample`` keeps its folder; the image_folder dataset writes it on first use (``data.sample_group``:
  jaxssl/data/sample_folder.py copies the photos byte for byte), so loading a config writes nothing."""
  cache = pathlib.Path(os.environ.get('JAXSSL_CACHE_DIR') or pathlib.Path.home() / '.cache' / 'jaxssl')
  return str(cache / 'sample_folder' / 'kaggle_sleeve')


def base_config(variant: str, quick: bool) -> ml_collections.ConfigDict:
  """CifarNet on the folder's images at 64 px (32 for a quick look), held-out val and test 10% each."""
  c = common.base_config()
  c.data = common.data_config('image_folder', eval_split='val',
                              sample_group='sleeve' if variant == 'sample' else '')   # classes for ':sample'
  c.data.source_dir = sample_folder() if variant == 'sample' else ''   # '' = $JAXSSL_IMAGE_FOLDER_DIR
  c.data.image_size = 32 if quick else 64
  c.data.channels = 3
  c.model.name = 'cifarnet'
  c.batch_size = 64
  c.eval_batch_size = 256
  return c
