"""Reading DeepFashion-style annotations as distributed, into one form every layout shares.

Three layouts, each read by one function that returns :class:`Annotations`:

* ``benchmark``: the DeepFashion Category and Attribute Prediction Benchmark (Liu et al., CVPR 2016) as
  downloaded: ``img/<folder>/<file>.jpg`` (or ``Img/img/...``), ``Anno/list_category_cloth.txt``,
  ``Anno/list_category_img.txt``, ``Anno/list_attr_cloth.txt``, ``Anno/list_attr_img.txt``,
  ``Anno/list_bbox.txt`` and ``Eval/list_eval_partition.txt``. Every file starts with a count line and a header
  line, and the count is checked. Categories are 1-based in ``list_category_img.txt`` (stored 0-based here);
  attribute values are -1/0/1, of which only 1 is positive.
* ``attr_challenge``: the course "attribute prediction challenge" layout of
  ``../shared/data/deepfashion_attr_sample``: ``split/<split>.txt`` (image paths), ``split/<split>_attr.txt``
  (one 0-based class per mutually exclusive attribute group), ``split/<split>_bbox.txt`` and
  ``split/list_attr_cloth.txt`` (count line, header, ``name group``). The per-group classes become one
  multi-hot vector over all attributes (exactly one positive per group), so the same multi-label head serves
  both layouts. No categories.
* ``csv``: an image folder with ``train.csv`` / ``val.csv`` / ``test.csv`` (any of them) with the columns
  ``file_path``, ``category`` (0-based index, or a name from ``categories.txt``) and ``attributes``
  (space-separated 0-based attribute indices); optional ``categories.txt`` and ``attributes.txt`` give the
  names, one a line. A split without the ``category`` or ``attributes`` column is unlabeled for it; an empty
  ``attributes`` cell means "no attribute present".

Where a layout brings only a training list (the attribute sample), validation and test are held out of it by
position: records ``i % 10 == 8`` go to ``val`` and ``i % 10 == 9`` to ``test`` (80/10/10, the same split on
every machine, no randomness to record).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import warnings

import numpy as np

LAYOUTS = ('benchmark', 'attr_challenge', 'csv')
SPLITS = ('train', 'val', 'test')
_PARSE_CHUNK = 8192   # attribute rows parsed per vectorized numpy call


class AnnotationError(ValueError):
  """An annotation file is missing, malformed or inconsistent: the message names the file, the line and the fix."""


@dataclasses.dataclass
class SplitAnnotations:
  """One split's records as arrays (289k records of 1000 attributes do not fit in Python objects cheaply)."""
  paths: list[str]                 # as written in the annotation files, relative to the source folder
  category: np.ndarray             # int64 [N], 0-based; -1 = not annotated
  attributes: np.ndarray           # uint8 [N, A] multi-hot (1 = present)
  has_attributes: np.ndarray       # bool [N]: False where the split carries no attribute labels
  bbox: np.ndarray                 # int64 [N, 4] x1 y1 x2 y2 in source pixels; -1 = none

  def __len__(self) -> int:
    return len(self.paths)

  def take(self, rows) -> SplitAnnotations:
    rows = np.asarray(rows, np.int64)
    return SplitAnnotations([self.paths[i] for i in rows], self.category[rows], self.attributes[rows],
                            self.has_attributes[rows], self.bbox[rows])


@dataclasses.dataclass
class Annotations:
  layout: str
  image_root: pathlib.Path                 # annotation paths are relative to this folder
  splits: dict[str, SplitAnnotations]
  category_names: tuple[str, ...]          # () when the layout has no categories
  category_types: tuple[int, ...]          # benchmark: 1 upper, 2 lower, 3 full body; else 0
  attribute_names: tuple[str, ...]
  attribute_types: tuple[int, ...]         # the group (type) of every attribute
  exclusive_groups: bool                   # every labelled image has exactly one attribute per group
  category_base: int                       # how the layout's own files number categories (1: benchmark)
  notes: tuple[str, ...] = ()


def _lines(path: pathlib.Path) -> list[str]:
  if not path.is_file():
    raise AnnotationError(f'{path}: file not found')
  with open(path, encoding='utf-8', errors='strict') as f:
    return [line.rstrip('\r\n') for line in f]


def _counted(path: pathlib.Path) -> list[str]:
  """The records of an official DeepFashion list: line 1 the count, line 2 the header; the count is checked."""
  lines = _lines(path)
  if len(lines) < 2:
    raise AnnotationError(f'{path}: expected a count line and a header line, found {len(lines)} line(s)')
  try:
    count = int(lines[0].split()[0])
  except (ValueError, IndexError) as e:
    raise AnnotationError(f'{path}: line 1 should be the number of records, found {lines[0]!r}') from e
  rows = [line for line in lines[2:] if line.strip()]
  if len(rows) != count:
    raise AnnotationError(f'{path}: line 1 says {count} records but the file has {len(rows)}; the file is '
                          'truncated or edited: restore the original, or correct line 1 for a deliberate subset')
  return rows


def _names_and_types(path: pathlib.Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """``name possibly with spaces   type`` rows: the name is every token but the last."""
  names, types = [], []
  for n, row in enumerate(_counted(path), start=3):
    tokens = row.split()
    if len(tokens) < 2 or not tokens[-1].lstrip('-').isdigit():
      raise AnnotationError(f'{path}:{n}: expected "<name> <type>", found {row!r}')
    names.append(' '.join(tokens[:-1]))
    types.append(int(tokens[-1]))
  return tuple(names), tuple(types)


def _path_table(path: pathlib.Path, ncols: int | None) -> dict[str, list[str]]:
  """``img/path.jpg v1 ... vK`` rows -> {path: [v1..vK]} (the path has no spaces in any official file)."""
  out = {}
  for n, row in enumerate(_counted(path), start=3):
    tokens = row.split()
    if ncols is not None and len(tokens) != ncols + 1:
      raise AnnotationError(f'{path}:{n}: expected an image path and {ncols} values, found {len(tokens) - 1}')
    out[tokens[0]] = tokens[1:]
  return out


def _attribute_matrix(path: pathlib.Path, num_attributes: int) -> tuple[list[str], np.ndarray]:
  """``list_attr_img.txt`` -> (paths, uint8 [N, A] with 1 where the value is 1; -1 and 0 are negative).

  The official file holds 289,222 x 1,000 values: rows are parsed in chunks by one numpy call each.
  """
  rows = _counted(path)
  paths, chunks = [], []
  for start in range(0, len(rows), _PARSE_CHUNK):
    part = rows[start:start + _PARSE_CHUNK]
    heads = [row.split(None, 1) for row in part]
    paths += [h[0] for h in heads]
    text = '\n'.join(h[1] if len(h) > 1 else '' for h in heads)
    try:
      with warnings.catch_warnings():  # numpy only warns (and stops) at a token that is not a number
        warnings.simplefilter('error', DeprecationWarning)
        values = np.fromstring(text, dtype=np.int8, sep=' ')  # 5x faster than int() per token
    except (ValueError, DeprecationWarning) as e:
      raise AnnotationError(f'{path}: a value in rows {start + 3}..{start + len(part) + 2} is not an integer '
                            f'({e})') from e
    if values.size != len(part) * num_attributes:
      lengths = [len(h[1].split()) if len(h) > 1 else 0 for h in heads]
      bad = next(i for i, k in enumerate(lengths) if k != num_attributes)
      raise AnnotationError(f'{path}:{start + bad + 3}: expected {num_attributes} attribute values (one per line '
                            f'of list_attr_cloth.txt), found {lengths[bad]}')
    values = values.reshape(len(part), num_attributes)
    if not np.isin(values, (-1, 0, 1)).all():
      r, c = np.argwhere(~np.isin(values, (-1, 0, 1)))[0]
      raise AnnotationError(f'{path}:{start + r + 3}: attribute {c} has value {values[r, c]}; values are -1, 0 or 1')
    chunks.append((values == 1).astype(np.uint8))
  return paths, (np.concatenate(chunks) if chunks else np.zeros((0, num_attributes), np.uint8))


def _hold_out(train: SplitAnnotations) -> dict[str, SplitAnnotations]:
  """80/10/10 by position (see the module docstring)."""
  pos = np.arange(len(train)) % 10
  return {'train': train.take(np.flatnonzero(pos < 8)), 'val': train.take(np.flatnonzero(pos == 8)),
          'test': train.take(np.flatnonzero(pos == 9))}


HOLD_OUT_NOTE = 'val and test held out of the training list by position: i % 10 == 8 -> val, 9 -> test'


# ------------------------------------------------------------------------------------------------ benchmark


def find_benchmark_dirs(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """(folder holding ``img/``, folder holding the annotation lists) of an unpacked benchmark."""
  image_root = next((d for d in (root, root / 'Img') if (d / 'img').is_dir()), None)
  anno = next((root / d for d in ('Anno', 'Anno_coarse') if (root / d).is_dir()), None)
  if image_root is None or anno is None or not (root / 'Eval').is_dir():
    raise AnnotationError(f'{root} is not an unpacked DeepFashion Category and Attribute Prediction Benchmark '
                          f'(needs img/ or Img/img/, Anno/ and Eval/)')
  return image_root, anno


def read_benchmark(root: pathlib.Path) -> Annotations:
  """The Category and Attribute Prediction Benchmark's lists, checked against each other."""
  image_root, anno = find_benchmark_dirs(root)
  category_names, category_types = _names_and_types(anno / 'list_category_cloth.txt')
  attribute_names, attribute_types = _names_and_types(anno / 'list_attr_cloth.txt')
  partition = _path_table(root / 'Eval' / 'list_eval_partition.txt', 1)
  categories = _path_table(anno / 'list_category_img.txt', 1)
  bboxes = _path_table(anno / 'list_bbox.txt', 4)
  attr_paths, attr_values = _attribute_matrix(anno / 'list_attr_img.txt', len(attribute_names))
  attr_row = {p: i for i, p in enumerate(attr_paths)}
  for name, table in (('Anno/list_category_img.txt', categories), ('Anno/list_bbox.txt', bboxes),
                      ('Anno/list_attr_img.txt', attr_row)):
    missing = [p for p in partition if p not in table]
    if missing:
      raise AnnotationError(f'{root / name} has no line for {len(missing)} image(s) of '
                            f'Eval/list_eval_partition.txt, e.g. {missing[:3]}; the files come from different '
                            'releases: use the lists of one download')
  unknown = sorted({v[0] for v in partition.values()} - set(SPLITS))
  if unknown:
    raise AnnotationError(f'{root}/Eval/list_eval_partition.txt: unknown partition(s) {unknown}; expected '
                          f'{", ".join(SPLITS)}')
  splits = {}
  for split in SPLITS:
    paths = [p for p, (s,) in partition.items() if s == split]
    if not paths:
      continue
    category = np.array([int(categories[p][0]) - 1 for p in paths], np.int64)
    bad = np.flatnonzero((category < 0) | (category >= len(category_names)))
    if len(bad):
      raise AnnotationError(f'{root}/Anno/list_category_img.txt: {paths[bad[0]]} has category '
                            f'{category[bad[0]] + 1}; categories are 1..{len(category_names)}')
    splits[split] = SplitAnnotations(
        paths, category, attr_values[[attr_row[p] for p in paths]], np.ones(len(paths), bool),
        np.array([[int(v) for v in bboxes[p]] for p in paths], np.int64).reshape(-1, 4))
  return Annotations('benchmark', image_root, splits, category_names, category_types, attribute_names,
                     attribute_types, exclusive_groups=False, category_base=1)


# ----------------------------------------------------------------------------------------- attr_challenge


def _plain(path: pathlib.Path) -> list[str]:
  return [line for line in _lines(path) if line.strip()]


def read_attr_challenge(root: pathlib.Path) -> Annotations:
  """The attribute-prediction challenge's split/ lists: one attribute class per group, no categories."""
  split_dir = root / 'split'
  names, types = _names_and_types(split_dir / 'list_attr_cloth.txt')
  groups = sorted(set(types))
  members = {g: [i for i, t in enumerate(types) if t == g] for g in groups}  # group -> global attribute ids
  splits = {}
  for split in SPLITS:
    if not (split_dir / f'{split}.txt').is_file():
      continue
    paths = [line.strip() for line in _plain(split_dir / f'{split}.txt')]
    n = len(paths)
    attributes = np.zeros((n, len(names)), np.uint8)
    labelled = (split_dir / f'{split}_attr.txt').is_file()
    if labelled:
      rows = _plain(split_dir / f'{split}_attr.txt')
      if len(rows) != n:
        raise AnnotationError(f'{split_dir}/{split}_attr.txt has {len(rows)} lines but {split}.txt lists {n} '
                              'images; they must match line for line')
      for i, row in enumerate(rows):
        classes = row.split()
        if len(classes) != len(groups):
          raise AnnotationError(f'{split_dir}/{split}_attr.txt:{i + 1}: expected {len(groups)} classes (one per '
                                f'attribute group of list_attr_cloth.txt), found {len(classes)}')
        for g, c in zip(groups, classes):
          c = int(c)
          if not 0 <= c < len(members[g]):
            raise AnnotationError(f'{split_dir}/{split}_attr.txt:{i + 1}: class {c} of group {g}, which has '
                                  f'{len(members[g])} attributes (0-based)')
          attributes[i, members[g][c]] = 1
    bbox = np.full((n, 4), -1, np.int64)
    if (split_dir / f'{split}_bbox.txt').is_file():
      rows = _plain(split_dir / f'{split}_bbox.txt')
      if len(rows) != n:
        raise AnnotationError(f'{split_dir}/{split}_bbox.txt has {len(rows)} lines but {split}.txt lists {n}')
      bbox = np.array([[int(v) for v in row.split()[:4]] for row in rows], np.int64).reshape(n, 4)
    splits[split] = SplitAnnotations(paths, np.full(n, -1, np.int64), attributes, np.full(n, labelled), bbox)
  if 'train' not in splits:
    raise AnnotationError(f'{split_dir}: no train.txt; the attribute-challenge layout needs split/train.txt, '
                          'split/train_attr.txt and split/list_attr_cloth.txt')
  notes = ()
  if set(splits) == {'train'}:
    splits, notes = _hold_out(splits['train']), (HOLD_OUT_NOTE,)
  return Annotations('attr_challenge', root, splits, (), (), names, types, exclusive_groups=True,
                     category_base=0, notes=notes)


# ------------------------------------------------------------------------------------------------------ csv


_CATEGORY_COLUMNS = ('category', 'category_label')
_ATTRIBUTE_COLUMNS = ('attributes', 'attribute_label', 'attribute_labels')


def _optional_names(path: pathlib.Path) -> tuple[str, ...] | None:
  return tuple(line.strip() for line in _plain(path)) if path.is_file() else None


def read_csv_folder(root: pathlib.Path) -> Annotations:
  """A folder of train/val/test.csv (file_path, optional category and attributes) and optional name lists."""
  category_names = _optional_names(root / 'categories.txt')
  attribute_names = _optional_names(root / 'attributes.txt')
  by_name = {name: i for i, name in enumerate(category_names or ())}
  raw = {}
  for split in SPLITS:
    path = root / f'{split}.csv'
    if not path.is_file():
      continue
    with open(path, newline='', encoding='utf-8') as f:
      reader = csv.DictReader(f)
      columns = [c.strip() for c in reader.fieldnames or ()]
      if 'file_path' not in columns:
        raise AnnotationError(f'{path}: no file_path column (header: {columns}); the header must name file_path '
                              f'and optionally category and attributes')
      cat_col = next((c for c in _CATEGORY_COLUMNS if c in columns), None)
      attr_col = next((c for c in _ATTRIBUTE_COLUMNS if c in columns), None)
      rows = [{k.strip(): (v or '').strip() for k, v in row.items() if k} for row in reader]
    raw[split] = (path, cat_col, attr_col, rows)
  if not raw:
    raise AnnotationError(f'{root}: no train.csv, val.csv or test.csv; the CSV layout needs at least one of them')

  def category_of(path, n, value):
    if value == '':
      return -1
    if value.lstrip('-').isdigit():
      return int(value)
    if value in by_name:
      return by_name[value]
    raise AnnotationError(f'{path}:{n}: category {value!r} is neither a 0-based index nor a name in '
                          f'{root / "categories.txt"}')

  splits, max_cat, max_attr = {}, -1, -1
  for split, (path, cat_col, attr_col, rows) in raw.items():
    category = np.array([category_of(path, n, r.get(cat_col, '')) if cat_col else -1
                         for n, r in enumerate(rows, start=2)], np.int64)
    indices = []
    for n, r in enumerate(rows, start=2):
      try:
        indices.append([int(v) for v in r.get(attr_col, '').split()] if attr_col else [])
      except ValueError as e:
        raise AnnotationError(f'{path}:{n}: attributes must be space-separated 0-based indices, found '
                              f'{r.get(attr_col)!r}') from e
    # pylint: disable-next=unexpected-keyword-arg  # ndarray.max does take initial=; pylint misreads numpy
    max_cat = max(max_cat, int(category.max(initial=-1)))
    max_attr = max(max_attr, max((max(i) for i in indices if i), default=-1))
    splits[split] = (rows, category, indices, attr_col is not None)
  num_categories = len(category_names) if category_names is not None else max_cat + 1
  num_attributes = len(attribute_names) if attribute_names is not None else max_attr + 1
  if max_cat >= num_categories or max_attr >= num_attributes:
    raise AnnotationError(f'{root}: a label index exceeds the names given (largest category {max_cat} for '
                          f'{num_categories} names, largest attribute {max_attr} for {num_attributes}); fix the '
                          'CSV or add the missing names to categories.txt / attributes.txt')
  out = {}
  for split, (rows, category, indices, labelled) in splits.items():
    attributes = np.zeros((len(rows), num_attributes), np.uint8)
    for i, idx in enumerate(indices):
      attributes[i, idx] = 1
    out[split] = SplitAnnotations([r['file_path'] for r in rows], category, attributes,
                                  np.full(len(rows), labelled), np.full((len(rows), 4), -1, np.int64))
  notes = ()
  if set(out) == {'train'}:
    out, notes = _hold_out(out['train']), (HOLD_OUT_NOTE,)
  return Annotations(
      'csv', root, out, category_names or tuple(f'category_{i}' for i in range(num_categories)),
      (0,) * num_categories, attribute_names or tuple(f'attribute_{i}' for i in range(num_attributes)),
      (0,) * num_attributes, exclusive_groups=False, category_base=0, notes=notes)


READERS = {'benchmark': read_benchmark, 'attr_challenge': read_attr_challenge, 'csv': read_csv_folder}


def read_annotations(layout: str, root) -> Annotations:
  if layout not in READERS:
    raise ValueError(f"unknown DeepFashion layout '{layout}'; choose one of: {', '.join(LAYOUTS)}")
  return READERS[layout](pathlib.Path(root).expanduser())
