"""Class-stratified subsets of a labelled split: the labelled fractions of a label-efficiency study.

A subset depends only on (labels, fraction, seed), never on the model or its initialization, so every init of
a study is trained on exactly the same images.
"""

from __future__ import annotations

import numpy as np

from jaxssl.data.sources import read_records


def stratified_subset(labels, fraction: float, seed: int) -> np.ndarray:
  """Sorted indices of round(fraction x count) records of every class (at least 1 of a class present),
  chosen at random with ``seed``; fraction 1 gives everything."""
  if not 0 < fraction <= 1:
    raise ValueError(f'fraction={fraction} must be in (0, 1]')
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  picked = []
  for c in np.unique(labels):  # sorted classes: the draw order is fixed
    members = np.flatnonzero(labels == c)
    n = min(len(members), max(1, int(round(fraction * len(members)))))
    picked.append(rng.permutation(members)[:n])
  return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def source_labels(source) -> np.ndarray:
  labels = []
  for start in range(0, len(source), 4096):
    labels += [int(r['label']) for r in read_records(source, range(start, min(start + 4096, len(source))))]
  return np.asarray(labels, np.int64)
