"""Where prepared datasets live on disk."""

from __future__ import annotations

import os

import ml_collections


def tfds_data_dir(data_cfg: ml_collections.ConfigDict) -> str:
  """Where prepared datasets live: the config, else $TFDS_DATA_DIR, else tfds' default."""
  return os.path.expanduser(data_cfg.get('data_dir') or os.environ.get('TFDS_DATA_DIR')
                            or '~/tensorflow_datasets')
