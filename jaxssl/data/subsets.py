"""Class-stratified subsets of a labelled split: the labelled fractions of a label-efficiency study.

Two ways to pick the subsets of one fraction (``data.subset_mode``):

- ``random``: repeated random subsets, one per ``subset_seed``; two seeds' subsets may share images.
- ``kfold``: disjoint stratified folds (seed experiment 003's protocol). Every class's records are permuted once
  with a fixed seed and cut into consecutive folds of floor(fraction x count) records (at least 1);
  ``subset_seed`` = k picks fold k. Folds never share an image, so their scores are independent estimates; a
  fraction f has the smallest class's floor(count / fold size) folds (2 at f = 0.5, 1 at f = 1).

A subset depends only on (labels, fraction, seed, mode), never on the model or its initialization, so every
init of a study is trained on exactly the same images.
"""

from __future__ import annotations

import numpy as np

from jaxssl.data import decoded
from jaxssl.data.datasets import load_split, require_labels
from jaxssl.data.sources import IndexedSubset, read_records
from jaxssl.data.splits import HOLDOUT_SPLIT

MODES = ('random', 'kfold')
FOLD_PERMUTATION_SEED = 0  # one fixed cut into folds: fold k of a fraction is the same images in every study


class FoldError(ValueError):
  """A fold beyond the number of disjoint folds a fraction has."""


def _class_members(labels: np.ndarray):
  for c in np.unique(labels):  # sorted classes: the draw order is fixed
    yield np.flatnonzero(labels == c)


def check_fractions(fractions, flag: str, least: int = 1) -> None:
  """ValueError naming ``flag`` unless ``fractions`` lists at least ``least`` labelled fractions, each in (0, 1]
  (a study's or the benchmark's, checked before anything trains)."""
  if not isinstance(fractions, (tuple, list)) or len(fractions) < least:
    raise ValueError(f'{flag}={fractions!r} must list at least {least} value(s): the labelled fractions, each in '
                     '(0, 1], e.g. (0.01, 0.1, 1.0)')
  bad = [f for f in fractions if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1]
  if bad:
    raise ValueError(f'{flag}={tuple(fractions)!r}: each must be in (0, 1], a share of the labelled training images '
                     f'(1.0 = all of them), not {", ".join(map(repr, bad))}')


def stratified_subset(labels, fraction: float, seed: int) -> np.ndarray:
  """Sorted indices of round(fraction x count) records of every class (at least 1 of a class present),
  chosen at random with ``seed``; fraction 1 gives everything."""
  if not 0 < fraction <= 1:
    raise ValueError(f'fraction={fraction} must be in (0, 1]')
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  picked = []
  for members in _class_members(labels):
    n = min(len(members), max(1, int(round(fraction * len(members)))))
    picked.append(rng.permutation(members)[:n])
  return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _fold_size(count: int, fraction: float) -> int:
  # Rounded down (not to nearest, as random subsets are): 0.5 of 23 images makes two folds of 11, not one of 12.
  return min(count, max(1, int(np.floor(fraction * count + 1e-9))))


def num_folds(labels, fraction: float) -> int:
  """How many disjoint stratified folds of ``fraction`` the labels allow (the smallest class decides)."""
  labels = np.asarray(labels)
  counts = [len(m) for m in _class_members(labels)]
  return min((n // _fold_size(n, fraction) for n in counts), default=0)


def stratified_fold(labels, fraction: float, fold: int) -> np.ndarray:
  """Sorted indices of fold ``fold`` of the disjoint stratified folds of ``fraction`` (module docstring)."""
  if not 0 < fraction <= 1:
    raise ValueError(f'fraction={fraction} must be in (0, 1]')
  labels = np.asarray(labels)
  available = num_folds(labels, fraction)
  if not 0 <= fold < available:
    raise FoldError(f'fold {fold} of fraction {fraction:g}: its records make only {available} disjoint stratified '
                    f'folds (0..{available - 1}); use subset_seed < {available} or data.subset_mode=random')
  rng = np.random.default_rng(FOLD_PERMUTATION_SEED)
  picked = []
  for members in _class_members(labels):
    n = _fold_size(len(members), fraction)
    picked.append(rng.permutation(members)[fold * n:(fold + 1) * n])
  return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def fold_plan(train, fractions, mode: str, where: str) -> tuple[dict, dict]:
  """For a study of ``fractions`` in ``mode`` over the records of ``train``: (folds per fraction, records per
  subset); with 'random' no folds (any seed draws a subset) and each fraction's subset size, the same for every seed
  (round(fraction x count) of every class, which is not round(fraction x records): 0.1% of Fashion-MNIST's 54k is 50
  images, not 54). Another mode is a ValueError naming ``where`` (the config key)."""
  if mode not in MODES:
    raise ValueError(f"{where}='{mode}' must be one of: {', '.join(MODES)}")
  labels = source_labels(train)
  if mode != 'kfold':
    return {}, {f: len(stratified_subset(labels, f, 0)) for f in fractions}
  folds = {f: num_folds(labels, f) for f in fractions}
  return folds, {f: len(stratified_fold(labels, f, 0)) for f in fractions if folds[f]}


def labelled_subset(labels, fraction: float, seed: int, mode: str = 'random') -> np.ndarray:
  """The training records of one study cell: ``mode`` 'random' (seed = which random subset) or 'kfold'
  (seed = which fold)."""
  if mode == 'kfold':
    return stratified_fold(labels, fraction, seed)
  if mode != 'random':
    raise ValueError(f"unknown subset mode '{mode}'; choose one of: {', '.join(MODES)} (set --config.data.subset_mode)")
  return stratified_subset(labels, fraction, seed)


def holdout_split(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held out): a class-stratified ``fraction`` of the records held out with ``seed`` (a validation split
  carved from the training images, ``data.holdout_fraction``), and the rest, both sorted."""
  labels = np.asarray(labels)
  held = stratified_subset(labels, fraction, seed)
  return np.setdiff1d(np.arange(len(labels)), held), held


# The labels of every whole tfds split read in this process, by decoded.prepared_identity: reading them parses
# every record (~4 s for Fashion-MNIST's 60k on a 2-core CPU), which a benchmark's 200-odd fine-tuning cells, each
# carving its validation images and its subset from the same split, would otherwise pay once each.
_LABELS: dict[tuple, np.ndarray] = {}


def source_labels(source) -> np.ndarray:
  """Every record's class label, in order (read once per process for a whole prepared tfds split)."""
  if getattr(source, 'labels', None) is not None:   # an IndexedSubset made where they were read (load_sources)
    return source.labels
  key = decoded.prepared_identity(source)
  if key is not None and key in _LABELS:
    return _LABELS[key].copy()
  labels = _read_labels(source)
  if key is not None:
    _LABELS[key] = labels.copy()
  return labels


def _read_labels(source) -> np.ndarray:
  labels = []
  for start in range(0, len(source), 4096):
    records = read_records(source, range(start, min(start + 4096, len(source))))
    if records:
      require_labels(records[0], 'a class-stratified labelled subset (data.train_fraction < 1, the study)')
    labels += [int(r['label']) for r in records]
  return np.asarray(labels, np.int64)


def load_sources(info, data_cfg) -> tuple:
  """(train, eval) sources of ``data_cfg``. With ``holdout_fraction`` > 0 a class-stratified part of the training
  records (``holdout_seed``, :func:`holdout_split`) is taken out of training, before ``train_fraction``'s subset;
  ``eval_split='holdout'`` evaluates on it: hyper-parameters are chosen on those validation images, never on the
  test split."""
  train = load_split(info, data_cfg.train_split, data_cfg, data_cfg.train_limit)
  fraction = float(data_cfg.get('holdout_fraction', 0.0))
  if fraction <= 0:
    return train, load_split(info, data_cfg.eval_split, data_cfg, data_cfg.eval_limit)
  labels = source_labels(train)
  kept, held = holdout_split(labels, fraction, int(data_cfg.get('holdout_seed', 0)))
  if data_cfg.eval_split == HOLDOUT_SPLIT:
    held = held[:int(data_cfg.eval_limit)] if data_cfg.eval_limit else held
    evaluated = IndexedSubset(train, held, labels[held])
  else:
    evaluated = load_split(info, data_cfg.eval_split, data_cfg, data_cfg.eval_limit)
  return IndexedSubset(train, kept, labels[kept]), evaluated   # the labelled subset and folds read no record again
