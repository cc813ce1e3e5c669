"""Random-access sources (``len``, ``__getitem__`` and, where it is faster, ``__getitems__``) and views of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def read_records(source, indices: Sequence[int]) -> list[dict[str, Any]]:
  """Batched random access where the source offers it (tfds sources do), else one record at a time."""
  indices = [int(i) for i in indices]
  getitems = getattr(source, '__getitems__', None)
  return list(getitems(indices)) if getitems else [source[i] for i in indices]


def is_tfds_source(source) -> bool:
  """Whether ``source`` is a tfds data source (``tfds.data_source``'s: its dataset info and decoders)."""
  return hasattr(source, 'dataset_info') and hasattr(source, 'decoders')


def find_under(source, wanted: Callable[[Any], bool]) -> tuple[Any, Any]:
  """(the view holding it or None, the first source for which ``wanted`` is true) down the ``.source`` links of
  jaxssl's views (IndexedSubset, PaddedImages, ...), ``source`` itself first; (None, None) where none is."""
  parent = None
  for _ in range(16):
    if wanted(source):
      return parent, source
    parent, source = source, getattr(source, 'source', None)
    if source is None:
      break
  return None, None


class IndexedSubset:
  """The records of ``source`` at ``indices``, as a random-access source. ``labels``: theirs, where the caller
  already read them (subsets.source_labels then reads nothing)."""

  def __init__(self, source, indices, labels=None):
    self.source, self.indices = source, np.asarray(indices, np.int64)
    self.labels = None if labels is None else np.asarray(labels, np.int64)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]

  def __getitems__(self, indices):
    return read_records(self.source, [int(self.indices[i]) for i in indices])


class PaddedImages:
  """A random-access source whose images are zero-padded, centred, to ``size`` x ``size`` (Fashion-MNIST at
  32x32, the LeNet/CIFAR input size: its background is 0, so the padding is more background)."""

  def __init__(self, source, size: int):
    self.source, self.size = source, int(size)

  def __len__(self) -> int:
    return len(self.source)

  def _pad(self, record: dict) -> dict:
    image = record['image']
    dh, dw = self.size - image.shape[0], self.size - image.shape[1]
    pads = ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)) + ((0, 0),) * (image.ndim - 2)
    return {**record, 'image': np.pad(image, pads)}

  def __getitem__(self, index):
    return self._pad(self.source[index])

  def __getitems__(self, indices):
    return [self._pad(r) for r in read_records(self.source, indices)]
