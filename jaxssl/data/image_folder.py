"""Your own images as a dataset: a folder of photos, prepared once into ArrayRecord (tfds, no TensorFlow).

``--config.data.name=image_folder --config.data.source_dir=DIR`` (or ``$JAXSSL_IMAGE_FOLDER_DIR=DIR``). The
layout is read from DIR itself, in one of three forms:

1. **Class folders** (torchvision's ImageFolder, ImageNet): ``DIR/<class>/**/*.jpg``, or with the splits given,
   ``DIR/train/<class>/...`` beside ``DIR/val/<class>/...`` (``validation/`` counts as val) and
   ``DIR/test/<class>/...``. The classes are the folder names, sorted. One class folder alone is read without
   labels, as a flat folder (a classifier of one class learns nothing): pretext tasks work, and a task or
   evaluation that needs labels stops with one line saying to add the other classes.
2. **Labels in file names** (Kaggle's Dogs vs. Cats): ``DIR/train/cat.123.jpg`` or ``DIR/cat.123.jpg``; the
   label is the name before its first dot. Every image must be so named and there must be at least two labels
   (otherwise the folder is read as flat). Kaggle's ``test1/`` folder of unlabelled numbered images, or any split
   folder of unlabelled images beside a labelled ``train/``, is left out (with a note in the metadata).
3. **Flat**: images directly in DIR (or in ``DIR/train/``) without labels, for pretext pretraining only: the
   dataset has no class names, its records no ``label``, and a task or evaluation that needs labels stops with
   one line naming the folder.

Hidden entries (``.name``, ``__MACOSX``) are skipped, files that are not images are counted and otherwise
ignored. Images: ``.jpg .jpeg .png .webp .bmp .gif .tif .tiff`` (first frame of an animation). A folder that
mixes layouts (class folders beside loose images, or split folders beside class folders), a class folder
without images, or a folder without images is one line naming it and the fix.

**Held-out splits.** The splits are train, val and test. Those the folder does not give are held out of the
training images, per class (stratified), by a fixed rule: the class's files are sorted by path and permuted by
``numpy.random.default_rng([0, crc32(class name)])``; the first ``round(test_fraction * n)`` go to test, the next
``round(val_fraction * n)`` to val (``data.test_fraction``, ``data.val_fraction``, 0.1 each by default; halves
round up; at least one each when the fraction is positive and the class has three or more images; at least one
image stays in train). The same files give the same splits on every machine, adding a class does not move the
others' images, and changing val_fraction leaves test unchanged. A split that gets no image so (classes of two
images or fewer, or a fraction of 0) is left out; asking for it is one line saying why and what to do.

**Images.** Every image is decoded (in threads), turned upright by its EXIF orientation
(``PIL.ImageOps.exif_transpose``), made RGB (or grey with ``data.channels=1``): transparency (RGBA, LA, palette
or colour-keyed) is composited on **white**, CMYK and palette images are converted, 16-bit grey is scaled by
1/257. It is then resized to ``data.image_size`` (default 64) square: ``data.resize='crop'`` (default) scales
the shorter side to the size and keeps the centred square, as SSL pipelines expect; ``'squash'`` scales both
sides, ignoring the aspect ratio (as DeepFashion's copies). Stored as JPEG quality 90 (``data.image_format=png``:
lossless). Large JPEGs are decoded at a reduced scale first (``Image.draft``, never below the target size).

**Prepared once** under ``--config.data.data_dir`` (``$TFDS_DATA_DIR``, ``~/tensorflow_datasets``) in
``jaxssl_image_folder/<size>px_<resize>_<channels>ch_<format>_val<v>_test<t>_<hash of DIR>/``, so another folder,
size or split rule gets its own copy. An unreadable or corrupt file is counted, logged (the first few named) and
skipped, listed in ``skipped_images.json`` beside the prepared data and in its metadata; a split none of whose
images can be read is one line naming the folder and the first of them. The copy is not
refreshed when files are added later: a warning says so when the folder's top levels changed since; delete the
copy's folder to prepare it again.

Records: ``image`` uint8 [S, S, C]; ``label`` int64 (the class's index in the sorted class names; absent in a
flat folder's records); ``file_path`` str (relative to DIR); ``index`` int64 (position in the split). The
dataset's mean and std are the training images' per-channel pixel statistics, computed while preparing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import os
import pathlib
import zlib

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image, ImageOps

from jaxssl.data.deepfashion import FORMATS, JPEG_QUALITY, DataNotFoundError
from jaxssl.data.deepfashion_layouts import AnnotationError
from jaxssl.data.paths import tfds_data_dir
from jaxssl.data.prepared import RuntimeConfiguredBuilder, SplitProgress, is_prepared, prepare_once, write_skipped
from jaxssl.data.prepared import skipped_images  # pylint: disable=unused-import  # this module's API too
from jaxssl.runlog import log

ENV_VAR = 'JAXSSL_IMAGE_FOLDER_DIR'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff')
SPLITS = ('train', 'val', 'test')
SPLIT_FOLDERS = {'train': 'train', 'val': 'val', 'validation': 'val', 'test': 'test'}   # lower-cased names
UNLABELLED_FOLDERS = ('test1',)   # Kaggle's Dogs vs. Cats: numbered test images without labels
RESIZE = ('crop', 'squash')
LAYOUT_WORDS = {'classes': 'class folders', 'names': 'labels in file names', 'flat': 'flat (no labels)'}
DEFAULT_SIZE = 64
SPLIT_SEED = 0
BACKGROUND = (255, 255, 255)      # transparent pixels become white
_CHUNK = 256                      # images decoded concurrently, then written in order
_REPORTED = 5                     # skipped or offending paths named in a message

_LAYOUTS_HELP = ('class folders DIR/<class>/x.jpg (or DIR/train/<class>/..., DIR/val/<class>/...), names with '
                 'labels DIR/train/cat.1.jpg, or flat images DIR/x.jpg (no labels)')


class ImageFolderNotFoundError(DataNotFoundError):
  """No folder given, or it does not exist: the message says how to give one."""


class ImageFolderError(AnnotationError):
  """The folder (or its data options) cannot make a dataset: the message names the folder, the problem and the
  fix. An AnnotationError, so the command reports it in one line."""


# ---------------------------------------------------------------------------------------------- the layout


@dataclasses.dataclass
class Plan:
  """What a folder holds, read from its file names only: the records of every split and how they were found."""
  root: pathlib.Path
  layout: str                                  # 'classes', 'names' (Kaggle) or 'flat'
  class_names: tuple[str, ...]                 # sorted; () for a flat folder
  splits: dict[str, list[tuple[str, int]]]     # split -> [(path relative to root, label or -1)], sorted by path
  given: tuple[str, ...]                       # the splits that came from split folders (the rest were held out)
  notes: tuple[str, ...] = ()
  missing: dict[str, str] = dataclasses.field(default_factory=dict)   # split -> why it has no images, the fix
  single_class: str = ''                       # the one class folder of a folder read as unlabelled for it

  @property
  def labelled(self) -> bool:
    return bool(self.class_names)


@dataclasses.dataclass
class _Found:
  kind: str                                    # 'classes', 'names', 'flat' or 'empty'
  groups: dict[str, list[str]]                 # label ('' for flat) -> paths relative to the root
  others: int = 0                              # files that are not images


def _skip(name: str) -> bool:
  return name.startswith('.') or name == '__MACOSX'   # hidden files, Jupyter checkpoints, macOS zip debris


def _is_image(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _entries(folder: pathlib.Path) -> tuple[list[str], list[str], int]:
  """(sub-folders, image files, number of other files) directly in ``folder``, sorted."""
  dirs, images, others = [], [], 0
  with os.scandir(folder) as it:
    for e in it:
      if _skip(e.name):
        continue
      if e.is_dir():
        dirs.append(e.name)
      elif _is_image(e.name):
        images.append(e.name)
      else:
        others += 1
  return sorted(dirs), sorted(images), others


def _walk_images(folder: pathlib.Path, root: pathlib.Path) -> tuple[list[str], int]:
  """Every image under ``folder`` (any depth), as sorted paths relative to ``root``; and the other files."""
  found, others, seen = [], 0, set()
  for d, dirs, names in os.walk(folder, followlinks=True):   # linked folders count (ImageNet setups link them)
    real = os.path.realpath(d)
    if real in seen:   # a link back up the tree, or a second link to one folder: its images once only
      dirs[:] = []
      continue
    seen.add(real)
    dirs[:] = [n for n in dirs if not _skip(n)]
    rel = pathlib.Path(d).relative_to(root)
    for n in names:
      if _skip(n):
        continue
      if _is_image(n):
        found.append((rel / n).as_posix())
      else:
        others += 1
  return sorted(found), others


def name_label(filename: str) -> str | None:
  """Kaggle's label: 'cat' of 'cat.123.jpg' (a name with at least two dots whose first part is not a number)."""
  parts = filename.split('.')
  return parts[0] if len(parts) >= 3 and parts[0] and not parts[0].isdigit() else None


def _examples(names: list[str]) -> str:
  return ', '.join(names[:_REPORTED]) + (', ...' if len(names) > _REPORTED else '')


def _read_folder(folder: pathlib.Path, root: pathlib.Path, notes: list[str]) -> _Found:
  """One folder's images: class sub-folders, names with labels, or flat."""
  dirs, images, others = _entries(folder)
  if dirs and images:
    raise ImageFolderError(
        f'{folder} mixes class folders ({_examples(dirs)}) with {len(images)} loose image(s) ({_examples(images)}): '
        'move the loose images into a class folder (or a folder of their own), or point --config.data.source_dir '
        'at a folder of one layout')
  if dirs:
    groups = {}
    for d in dirs:
      paths, other = _walk_images(folder / d, root)
      if not paths:
        raise ImageFolderError(f'class folder {folder / d} holds no images ({" ".join(IMAGE_EXTENSIONS)}): add its '
                               'images or remove the folder')
      groups[d], others = paths, others + other
    return _Found('classes', groups, others)
  rel = folder.relative_to(root)
  paths = [(rel / n).as_posix() for n in images]
  labels = [name_label(n) for n in images]
  if images and all(labels) and len(set(labels)) >= 2:
    groups = {}
    for label, path in zip(labels, paths):
      groups.setdefault(label, []).append(path)
    return _Found('names', dict(sorted(groups.items())), others)
  named = sum(1 for label in labels if label)
  if named and named < len(images):
    notes.append(f'{folder}: {named} of {len(images)} names look like <label>.<id>.<ext> but not all, so the '
                 'images are read as unlabelled')
  return _Found('flat' if images else 'empty', {'': paths} if images else {}, others)


def scan(root, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Plan:
  """The layout, classes and split records of ``root`` (see the module docstring); reads names, not images."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise ImageFolderNotFoundError(f'image folder {root} does not exist: point --config.data.source_dir (or '
                                   f'${ENV_VAR}) at a folder of images: {_LAYOUTS_HELP}')
  notes: list[str] = []
  dirs, images, others = _entries(root)
  split_dirs, extra = {}, []
  for d in dirs:
    split = SPLIT_FOLDERS.get(d.lower())
    if split is None:
      extra.append(d)
    elif split in split_dirs:
      raise ImageFolderError(f'{root} has two folders for the {split} split ({split_dirs[split]}/ and {d}/): '
                             'merge them or rename one')
    else:
      split_dirs[split] = d
  if split_dirs:
    unlabelled = [d for d in extra if d.lower() in UNLABELLED_FOLDERS]
    extra = [d for d in extra if d not in unlabelled]
    if extra:
      raise ImageFolderError(
          f'{root} mixes split folders ({", ".join(d + "/" for d in split_dirs.values())}) with other folders '
          f'({_examples(extra)}): put the class folders inside train/ (and val/, test/), or remove the split '
          'folders so that every folder is a class')
    if images:
      raise ImageFolderError(
          f'{root} mixes split folders ({", ".join(d + "/" for d in split_dirs.values())}) with {len(images)} '
          f'loose image(s) ({_examples(images)}): move them into train/, or remove the split folders')
    if 'train' not in split_dirs:
      raise ImageFolderError(f'{root} has {", ".join(d + "/" for d in split_dirs.values())} but no train/: add '
                             'train/ (the training images; the pixel statistics come from it)')
    found = {s: _read_folder(root / d, root, notes) for s, d in split_dirs.items()}
    notes += [f'{root / d}: not used (unlabelled images beside a labelled train/, as Kaggle\'s test1/)'
              for d in unlabelled]
  else:
    if dirs and images:
      raise ImageFolderError(
          f'{root} mixes class folders ({_examples(dirs)}) with {len(images)} loose image(s) ({_examples(images)}): '
          'move the loose images into a class folder (or a folder of their own), or point --config.data.source_dir '
          'at a folder of one layout')
    found = {'train': _read_folder(root, root, notes)}
  others += sum(f.others for f in found.values())
  train = found['train']
  if train.kind == 'empty':
    where = root / split_dirs['train'] if split_dirs else root
    raise ImageFolderError(f'image folder {where} holds no images ({" ".join(IMAGE_EXTENSIONS)}); expected '
                           f'{_LAYOUTS_HELP}')
  labelled = train.kind != 'flat'
  class_names = tuple(sorted(train.groups)) if labelled else ()
  single_class = class_names[0] if len(class_names) == 1 else ''
  for split in [s for s in found if s != 'train']:
    f, folder = found[split], root / split_dirs[split]
    if f.kind == 'empty':
      notes.append(f'{folder}: no images; {split} is held out of train instead')
    elif labelled and f.kind == 'flat':
      notes.append(f'{folder}: {len(f.groups[""])} images without labels beside a labelled train/ (as Kaggle\'s '
                   f'test set): not used; {split} is held out of train instead')
    elif f.kind != train.kind:
      kinds = {'classes': 'class folders', 'names': 'labels in file names', 'flat': 'unlabelled images'}
      raise ImageFolderError(f'{root}: train/ has {kinds[train.kind]} but {split_dirs[split]}/ has '
                             f'{kinds[f.kind]}: give every split the same layout')
    else:
      unknown = sorted(set(f.groups) - set(class_names)) if labelled else []
      if unknown:
        raise ImageFolderError(f'{folder} has class(es) that train/ has not: {_examples(unknown)}; a classifier '
                               'cannot learn them: add their training images or remove them')
      continue
    del found[split]
  if others:
    notes.append(f'{others} file(s) that are not images ({" ".join(IMAGE_EXTENSIONS)}) ignored')
  if single_class:   # one class is no labels (a classifier of one class learns nothing): pretext tasks only
    notes.append(f'{root}: one class folder only ({single_class}/): its images are read without labels, for '
                 'pretext tasks; a task that needs labels needs two classes or more')
    labelled, class_names = False, ()
  index = {name: i for i, name in enumerate(class_names)}

  def records(f: _Found) -> list[tuple[str, int]]:
    return sorted((p, index[g] if labelled else -1) for g, paths in f.groups.items() for p in paths)

  splits = {s: records(f) for s, f in found.items()}
  held = [s for s in ('val', 'test') if s not in splits]
  missing = {}
  if held:
    fractions = {'val': val_fraction if 'val' in held else 0.0, 'test': test_fraction if 'test' in held else 0.0}
    counts = collections.Counter(y for _, y in splits['train'])   # before hold_out: the classes' sizes
    parts = hold_out(splits['train'], fractions['val'], fractions['test'], class_names, single_class or '')
    splits.update({s: parts[s] for s in ['train'] + held})
    notes.append(f'{" and ".join(held)} held out of train per class (val_fraction={fractions["val"]:g}, '
                 f'test_fraction={fractions["test"]:g}, seed {SPLIT_SEED})')
    has = [s for s in SPLITS if splits.get(s)]
    missing = {s: _why_none_held_out(root, s, fractions[s], [counts[y] for y in sorted(counts)] if labelled else [],
                                     has)
               for s in held if not splits[s]}
  splits = {s: splits[s] for s in SPLITS if splits.get(s)}
  layout = train.kind
  return Plan(root, layout, class_names, splits, tuple(s for s in SPLITS if s in found), tuple(notes), missing,
              single_class)


def _why_none_held_out(root: pathlib.Path, split: str, fraction: float, sizes: list[int], has: list[str]) -> str:
  """Why holding ``split`` out of train gave no image (the fraction is 0, or the classes are too small: ``sizes``,
  the classes' image counts, [] for unlabelled images), and the fixes: the reason load_split gives for a split the
  dataset lacks."""
  given = f'{root} has no {split}/ folder with images'
  other = f'or set --config.data.eval_split to a split it has ({", ".join(has)})'
  if fraction <= 0:
    return (f'{given}, and --config.data.{split}_fraction=0 holds none of train out: set it above 0 (e.g. 0.1), add '
            f'a {split}/ folder, {other}')
  if not sizes:   # unlabelled: the folder is one group
    return (f'{given}, and holding {split}_fraction={fraction:g} of its images out of train took none: it has too '
            'few (val and test get one image each only from 3 images on, test first, and at least one stays in '
            f'train): add images, add a {split}/ folder, {other}')
  counts = f'{min(sizes)}' if min(sizes) == max(sizes) else f'{min(sizes)} to {max(sizes)}'
  return (f'{given}, and holding {split}_fraction={fraction:g} of each class out of train took no image: its '
          f'{len(sizes)} classes have {counts} image(s) each (a class gives val and test one image each only from '
          f'3 images on, test first, and keeps at least one for train): add images, add a {split}/ folder, {other}')


def held_out_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
  """(val, test) images held out of a class of ``n``: the rule of the module docstring."""
  def count(fraction):
    k = int(np.floor(fraction * n + 0.5))
    return max(k, 1) if fraction > 0 and n >= 3 else k
  val, test = count(val_fraction), count(test_fraction)
  while val + test > max(n - 1, 0):   # at least one training image; val gives way first, so test stays put
    if val > 0:
      val -= 1
    else:
      test -= 1
  return val, test


def hold_out(train: list[tuple[str, int]], val_fraction: float, test_fraction: float,
             class_names: tuple[str, ...], unlabelled: str = '') -> dict[str, list[tuple[str, int]]]:
  """train -> {'train', 'val', 'test'} by the stratified rule of the module docstring (fixed seed, per class
  name; ``unlabelled`` names the records without a label: a lone class folder's name, so that its split is the
  one it had when such a folder was read as one labelled class)."""
  by_label: dict[int, list[tuple[str, int]]] = {}
  for record in sorted(train):
    by_label.setdefault(record[1], []).append(record)
  out = {'train': [], 'val': [], 'test': []}
  for label, members in sorted(by_label.items()):
    name = class_names[label] if label >= 0 else unlabelled
    n_val, n_test = held_out_counts(len(members), val_fraction, test_fraction)
    order = np.random.default_rng([SPLIT_SEED, zlib.crc32(name.encode())]).permutation(len(members))
    out['test'] += [members[i] for i in order[:n_test]]
    out['val'] += [members[i] for i in order[n_test:n_test + n_val]]
    out['train'] += [members[i] for i in order[n_test + n_val:]]
  return {s: sorted(v) for s, v in out.items()}


def folder_stamp(root: pathlib.Path) -> str:
  """A cheap fingerprint of the folder's top three levels (their names and modification times): it changes when
  files are added to or removed from the folder, a split folder or a class folder."""
  h = hashlib.sha1()
  level = [pathlib.Path(root)]
  for _ in range(3):
    below = []
    for d in level:
      try:
        h.update(f'{d.relative_to(root).as_posix()}:{d.stat().st_mtime_ns};'.encode())
        with os.scandir(d) as it:
          below += sorted(pathlib.Path(e.path) for e in it if not _skip(e.name) and e.is_dir())
      except OSError:
        continue
    level = below
  return h.hexdigest()[:12]


# --------------------------------------------------------------------------------------------------- images


def load_image(path, size: int, resize: str = 'crop', channels: int = 3) -> np.ndarray:
  """uint8 [size, size, channels] of an image file, by the rules of the module docstring. Raises OSError /
  ValueError (and PIL's DecompressionBombError) for a missing, truncated or undecodable file."""
  with Image.open(path) as im:
    if im.format == 'JPEG':
      im.draft(None, (size, size))   # DCT-domain downscale: both sides stay >= size
    im = ImageOps.exif_transpose(im)  # decodes now: a truncated file raises here
  if im.mode in ('I', 'F') or im.mode.startswith('I;16'):   # 16-bit grey: 65535 -> 255 ('F' is taken as 0..255)
    values = np.asarray(im, np.float64) / (1.0 if im.mode == 'F' else 257.0)
    im = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
  if im.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in im.info:
    rgba = im.convert('RGBA')
    im = Image.alpha_composite(Image.new('RGBA', rgba.size, BACKGROUND + (255,)), rgba)
  im = im.convert('RGB' if channels == 3 else 'L')
  w, h = im.size
  box = None
  if resize == 'crop':
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
  # PIL's bilinear resize is antialiased. (no-member: pylint does not see PIL's resampling constants.)
  pixels = np.asarray(im.resize((size, size), Image.BILINEAR, box=box))  # pylint: disable=no-member
  return pixels.reshape(size, size, channels)


@dataclasses.dataclass
class Skipped:
  path: str
  reason: str


def _prepare_one(path: pathlib.Path, size: int, resize: str, channels: int, fmt: str):
  try:
    pixels = load_image(path, size, resize, channels)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    reason = 'missing' if isinstance(e, FileNotFoundError) else f'unreadable: {type(e).__name__}: {e}'
    return Skipped(str(path), reason)
  buf = io.BytesIO()
  Image.fromarray(pixels if channels == 3 else pixels[..., 0]).save(
      buf, format=FORMATS[fmt], **({'quality': JPEG_QUALITY} if fmt == 'jpeg' else {}))
  flat = pixels.reshape(-1, channels).astype(np.float64) / 255.0
  return buf.getvalue(), flat.sum(0), np.square(flat).sum(0)


# -------------------------------------------------------------------------------------------------- builder


def _pct(fraction: float) -> str:
  return f'{100 * fraction:g}'.replace('.', 'p')


class ImageFolderConfig(tfds.core.BuilderConfig):
  """What a prepared copy depends on; its name says so, so several sizes and folders live side by side."""

  def __init__(self, *, source_dir: pathlib.Path, image_size: int, resize: str, channels: int, image_format: str,
               val_fraction: float, test_fraction: float):
    check_options(image_size, resize, channels, image_format, val_fraction, test_fraction)
    source_id = hashlib.sha1(str(source_dir).encode()).hexdigest()[:8]
    super().__init__(
        name=f'{image_size}px_{resize}_{channels}ch_{image_format}_val{_pct(val_fraction)}_test'
             f'{_pct(test_fraction)}_{source_id}',
        description=f'{source_dir}, {image_size} px ({resize}), {channels} channel(s), {image_format}')
    self.source_dir, self.image_size, self.resize = source_dir, int(image_size), resize
    self.channels, self.image_format = int(channels), image_format
    self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)


def check_options(image_size, resize, channels, image_format, val_fraction, test_fraction) -> None:
  """The data options of an image folder, each with the flag that sets it."""
  problems = []
  if not 16 <= image_size <= 1024:
    problems.append(f'--config.data.image_size={image_size} must be between 16 and 1024 pixels')
  if resize not in RESIZE:
    problems.append(f"--config.data.resize='{resize}' must be one of: {', '.join(RESIZE)}")
  if channels not in (1, 3):
    problems.append(f'--config.data.channels={channels} must be 3 (RGB) or 1 (grey)')
  if image_format not in FORMATS:
    problems.append(f"--config.data.image_format='{image_format}' must be one of: {', '.join(FORMATS)}")
  if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
    problems.append(f'--config.data.val_fraction={val_fraction} and --config.data.test_fraction={test_fraction} '
                    'must be in [0, 1) with a sum below 1')
  if problems:
    raise ImageFolderError('image folder: ' + '; '.join(problems))


class ImageFolder(RuntimeConfiguredBuilder):
  """The images of a folder with their class (if any) and file path, sorted by path in every split."""

  name = 'jaxssl_image_folder'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Class folders, labels in file names, flat; held-out splits; resized when prepared.'}

  def __init__(self, *, config: ImageFolderConfig, workers: int = 0, plan: Plan | None = None, **kwargs):
    self._plan = plan
    super().__init__(config=config, workers=workers, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    s = cfg.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description='A folder of images (class folders, labels in file names, or unlabelled).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(s, s, cfg.channels), encoding_format=cfg.image_format),
            'label': tfds.features.Scalar(dtype=np.int64),    # -1 in a flat folder (removed when read)
            'file_path': tfds.features.Text(),
            'index': tfds.features.Scalar(dtype=np.int64),
        }),
        disable_shuffling=True,   # keys are positions in path order
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager   # the folder is the config's
    cfg = self.builder_config
    plan = self._plan or scan(cfg.source_dir, cfg.val_fraction, cfg.test_fraction)
    self.info.metadata.update({
        'source_dir': str(cfg.source_dir), 'layout': plan.layout, 'class_names': list(plan.class_names),
        'given_splits': list(plan.given), 'notes': list(plan.notes), 'image_size': cfg.image_size,
        'resize': cfg.resize, 'channels': cfg.channels, 'image_format': cfg.image_format,
        'val_fraction': cfg.val_fraction, 'test_fraction': cfg.test_fraction, 'split_seed': SPLIT_SEED,
        'stamp': folder_stamp(cfg.source_dir), 'missing_splits': dict(plan.missing),
        'single_class': plan.single_class, 'splits': {}})
    return {split: self._generate_examples(split, rows) for split, rows in plan.splits.items()}

  def _generate_examples(self, split: str, rows: list[tuple[str, int]]):
    cfg = self.builder_config
    skipped, written = [], 0
    counts = np.zeros(max(1, len(self.info.metadata['class_names'])), np.int64)
    pixel_sum, pixel_sq, pixels = np.zeros(cfg.channels), np.zeros(cfg.channels), 0
    progress = SplitProgress('image folder', split, len(rows))
    with concurrent.futures.ThreadPoolExecutor(self._workers) as pool:   # PIL releases the GIL while decoding
      for first in range(0, len(rows), _CHUNK):
        chunk = rows[first:first + _CHUNK]
        results = pool.map(lambda r: _prepare_one(cfg.source_dir / r[0], cfg.image_size, cfg.resize, cfg.channels,
                                                  cfg.image_format), chunk)
        for (path, label), result in zip(chunk, results):
          if isinstance(result, Skipped):
            skipped.append({'file_path': path, 'reason': result.reason})
            continue
          encoded, s, sq = result
          pixel_sum, pixel_sq, pixels = pixel_sum + s, pixel_sq + sq, pixels + cfg.image_size ** 2
          if label >= 0:
            counts[label] += 1
          yield written, {'image': encoded, 'label': label, 'file_path': path, 'index': written}
          written += 1
        progress.update(first + len(chunk))
    if rows and not written:   # tfds would fail on the empty split with a traceback ("No examples were yielded")
      examples = '; '.join(f"{s['file_path']} ({s['reason']})" for s in skipped[:2])
      raise ImageFolderError(
          f'image folder {cfg.source_dir}: none of the {len(rows)} image(s) of its {split} split could be read '
          f'(e.g. {examples}): replace the unreadable files with images, or remove them, or point '
          '--config.data.source_dir at another folder')
    mean = pixel_sum / max(pixels, 1)
    std = np.sqrt(np.maximum(pixel_sq / max(pixels, 1) - np.square(mean), 0.0))
    self.info.metadata['splits'][split] = {
        'listed': len(rows), 'written': written, 'skipped': skipped, 'class_counts': counts.tolist(),
        'mean': mean.round(4).tolist(), 'std': std.round(4).tolist()}
    progress.finish(written, len(skipped))
    if skipped:
      logging.warning('image folder %s: skipped %d of %d images (unreadable), e.g. %s; all are listed in '
                      'skipped_images.json beside the prepared data', split, len(skipped), len(rows),
                      ', '.join(f"{s['file_path']} ({s['reason']})" for s in skipped[:_REPORTED]))


def find_source_dir(source_dir: str | None) -> pathlib.Path:
  given = source_dir or os.environ.get(ENV_VAR)
  if not given:
    raise ImageFolderNotFoundError(f'no image folder given: set --config.data.source_dir=DIR or ${ENV_VAR}=DIR; '
                                   f'DIR holds {_LAYOUTS_HELP}')
  return pathlib.Path(given).expanduser().resolve()


def builder(data_cfg) -> ImageFolder:
  """The builder a data config names (``source_dir``, ``image_size``, ``resize``, ``channels``,
  ``image_format``, ``val_fraction``, ``test_fraction``, ``data_dir``, ``prepare_workers``), prepared on first
  use. ``sample_group`` (configs/folder_common.py's ``:sample``): ``source_dir`` is first made a Kaggle-style
  folder of the DeepFashion sample's photos, classed by that attribute group (jaxssl/data/sample_folder.py)."""
  if data_cfg.get('sample_group'):   # the configs' ':sample': a folder of real photos, written on first use
    from jaxssl.data import sample_folder  # pylint: disable=import-outside-toplevel
    sample_folder.make_sample_folder(find_source_dir(data_cfg.get('source_dir') or None), 'kaggle',
                                     group=data_cfg.sample_group)
  config = ImageFolderConfig(
      source_dir=find_source_dir(data_cfg.get('source_dir') or None),
      image_size=int(data_cfg.get('image_size', 0) or DEFAULT_SIZE), resize=data_cfg.get('resize', '') or 'crop',
      channels=int(data_cfg.get('channels', 0) or 3), image_format=data_cfg.get('image_format', '') or 'jpeg',
      val_fraction=float(data_cfg.get('val_fraction', 0.1)), test_fraction=float(data_cfg.get('test_fraction', 0.1)))
  data_dir, workers = tfds_data_dir(data_cfg), int(data_cfg.get('prepare_workers', 0))
  b = ImageFolder(config=config, data_dir=data_dir, workers=workers)
  # is_prepared needs the final version folder: an interrupted prepare is never taken for a finished one.
  if is_prepared(b):
    _warn_if_changed(b)
    return b
  plan = scan(config.source_dir, config.val_fraction, config.test_fraction)   # layout errors before any file
  sizes = ', '.join(f'{len(v):,} {s}' for s, v in plan.splits.items())
  classes = (f'{len(plan.class_names)} classes' if plan.labelled else
             f'one class ({plan.single_class}): no labels' if plan.single_class else 'no labels')
  log(f'image folder {config.source_dir}: {LAYOUT_WORDS[plan.layout]}, {classes}, {sizes} images; preparing once at '
      f'{config.image_size} px ({config.resize}) into {os.path.join(data_dir, ImageFolder.name, config.name)}')
  for note in plan.notes:
    log(f'  note: {note}')
  b = ImageFolder(config=config, data_dir=data_dir, workers=workers, plan=plan)
  b, made = prepare_once(b, lambda: ImageFolder(config=config, data_dir=data_dir, workers=workers))
  if made:
    write_skipped(b, 'listed')
  return b


def _warn_if_changed(b: ImageFolder) -> None:
  meta = b.info.metadata
  if meta.get('stamp') and meta['stamp'] != folder_stamp(b.builder_config.source_dir):
    logging.warning('image folder %s changed since it was prepared into %s; this run uses the prepared copy. '
                    'Delete that folder to prepare the images again.', meta['source_dir'], b.data_dir)




# ------------------------------------------------------------------------------------------------- reading


class _Unlabelled:
  """A flat folder's records without their placeholder 'label' (-1), so that a task that needs labels sees none."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  @staticmethod
  def _strip(record):
    return {k: v for k, v in record.items() if k != 'label'}

  def __getitem__(self, index):
    return self._strip(self.source[index])

  def __getitems__(self, indices):
    return [self._strip(r) for r in self.source.__getitems__(indices)]


def _class_names(meta) -> tuple[str, ...]:
  """The classes of a prepared copy: none for a flat folder, nor for one class folder alone (read without labels;
  a copy prepared before that rule still lists its one class)."""
  names = tuple(meta['class_names'])
  return names if len(names) >= 2 else ()


def data_source(split: str, data_cfg):
  """Random-access records of one split (``len``, ``__getitem__``, ``__getitems__``)."""
  b = builder(data_cfg)
  source = b.as_data_source(split=split)
  return source if _class_names(b.info.metadata) else _Unlabelled(source)


def no_labels_note(meta) -> str:
  """Why a flat folder (or one of a single class folder) has no labels and what to do, to begin the one-line error
  of a task that needs them."""
  d = meta['source_dir']
  single = meta.get('single_class') or (meta['class_names'][0] if len(meta['class_names']) == 1 else '')
  if single:
    return (f'image folder {d} has one class folder only ({single}/), so its images have no labels (a classifier '
            f'needs two classes or more); for tasks or evaluations that need labels, add a folder of each other '
            f'class beside {d}/{single}/')
  return (f'image folder {d} has no labels (flat layout: images without class folders); for tasks or evaluations '
          f'that need labels, sort them into {d}/<class>/ folders or name them <label>.<id>.jpg')


def dataset_fields(data_cfg) -> dict:
  """The fields of jaxssl.data.datasets.DatasetInfo for this folder, prepared on first use."""
  meta = builder(data_cfg).info.metadata
  size, channels = int(meta['image_size']), int(meta['channels'])
  stats = meta['splits']['train']
  class_names = _class_names(meta)
  return {'name': 'image_folder', 'input_shape': (size, size, channels), 'class_names': class_names,
          'mean': tuple(stats['mean']), 'std': tuple(stats['std']),
          'splits': tuple(s for s in SPLITS if s in meta['splits']), 'load': data_source,
          'no_labels': '' if class_names else no_labels_note(meta),
          'missing_splits': tuple(sorted(dict(meta.get('missing_splits') or {}).items()))}
