"""A small labelled image folder made of real photographs, for trying the ``image_folder`` dataset without one.

The DeepFashion attribute sample (``../shared/data/deepfashion_attr_sample``, 357 real photos, see its
SOURCE.md) has no categories, but every photo has exactly one attribute of each of six mutually exclusive
groups. One group's attributes become the classes: by default the sleeve (``long_sleeve`` 119,
``short_sleeve`` 55, ``sleeveless`` 183 photos). The photos are copied byte for byte (JPEGs as distributed) into
one of the layouts :mod:`jaxssl.data.image_folder` reads:

* ``'kaggle'``: ``DST/train/<class>.<number>.jpg`` (Kaggle's Dogs vs. Cats naming);
* ``'classes'``: ``DST/<class>/<number>.jpg`` (torchvision's ImageFolder);
* ``'splits'``: ``DST/train/<class>/...`` and ``DST/val/<class>/...`` (every fifth photo of a class in val);
* ``'flat'``: ``DST/<number>.jpg``, no labels.

``<number>`` is the photo's number in the sample (``img/00012.jpg`` -> 12). This module imports neither tfds
nor jax, so a config file may call it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

SAMPLE_ENV = 'JAXSSL_DEEPFASHION_SAMPLE_DIR'
LAYOUTS = ('kaggle', 'classes', 'splits', 'flat')
GROUPS = {'texture': 1, 'sleeve': 2, 'length': 3, 'neckline': 4, 'fabric': 5, 'fit': 6}   # list_attr_cloth.txt types
_MARKER = '.jaxssl_sample.json'   # hidden: the image folder reader skips it


class SampleNotFoundError(FileNotFoundError):
  """The DeepFashion attribute sample is not where it was looked for."""


def default_sample_dir() -> pathlib.Path:
  """$JAXSSL_DEEPFASHION_SAMPLE_DIR, else ../shared/data/deepfashion_attr_sample beside the checkout."""
  return pathlib.Path(os.environ.get(SAMPLE_ENV) or
                      pathlib.Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'deepfashion_attr_sample')


def sample_classes(sample_dir=None, group: str = 'sleeve') -> dict[str, list[str]]:
  """class name -> the sample's image paths (relative to it) of that class, in the sample's order."""
  root = pathlib.Path(sample_dir or default_sample_dir())
  split = root / 'split'
  if not (split / 'train_attr.txt').is_file():
    raise SampleNotFoundError(f'the DeepFashion attribute sample was not found at {root} (needs split/train.txt, '
                              f'split/train_attr.txt, split/list_attr_cloth.txt): set ${SAMPLE_ENV}')
  if group not in GROUPS:
    raise ValueError(f"unknown attribute group '{group}'; choose one of: {', '.join(GROUPS)}")
  rows = [line.split() for line in (split / 'list_attr_cloth.txt').read_text().splitlines()[2:] if line.strip()]
  names = [' '.join(r[:-1]) for r in rows if int(r[-1]) == GROUPS[group]]   # the group's attributes, in order
  paths = [p.strip() for p in (split / 'train.txt').read_text().splitlines() if p.strip()]
  attrs = [line.split() for line in (split / 'train_attr.txt').read_text().splitlines() if line.strip()]
  out: dict[str, list[str]] = {n: [] for n in names}
  for path, classes in zip(paths, attrs):
    out[names[int(classes[GROUPS[group] - 1])]].append(path)
  return out


def make_sample_folder(dst, layout: str = 'kaggle', *, group: str = 'sleeve', classes: tuple[str, ...] = (),
                       per_class: int = 0, sample_dir=None) -> dict[str, str]:
  """Writes the folder (see the module docstring) and returns {written path relative to ``dst``: class}.

  ``classes``: only these classes of ``group`` (default: all of them); ``per_class`` > 0: at most that many
  photos of each (the first in the sample's order). Idempotent: a folder already made with the same arguments
  is left as it is; ``dst`` must otherwise be empty or absent.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"unknown sample folder layout '{layout}'; choose one of: {', '.join(LAYOUTS)}")
  src = pathlib.Path(sample_dir or default_sample_dir())
  by_class = sample_classes(src, group)
  unknown = sorted(set(classes) - set(by_class))
  if unknown:
    raise ValueError(f"no class(es) {unknown} in the '{group}' group; it has: {', '.join(by_class)}")
  chosen = {c: (p[:per_class] if per_class > 0 else p) for c, p in by_class.items() if not classes or c in classes}
  dst = pathlib.Path(dst)
  args = {'layout': layout, 'group': group, 'classes': sorted(chosen), 'per_class': per_class}
  marker = dst / _MARKER
  if marker.is_file() and json.loads(marker.read_text()).get('args') == args:
    return json.loads(marker.read_text())['files']
  if dst.exists() and any(dst.iterdir()):
    raise FileExistsError(f'{dst} is not empty: give make_sample_folder an empty or new folder')
  # Written beside dst and renamed into place when complete: an interrupted copy never looks like a folder.
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{dst.name}.incomplete.', dir=dst.parent))
  files = {}
  try:
    for name, paths in chosen.items():
      for k, path in enumerate(paths):
        number = int(pathlib.Path(path).stem)
        rel = {'kaggle': f'train/{name}.{number}.jpg', 'classes': f'{name}/{number}.jpg',
               'splits': f"{'val' if k % 5 == 4 else 'train'}/{name}/{number}.jpg", 'flat': f'{number}.jpg'}[layout]
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / path, tmp / rel)
        files[rel] = name
    (tmp / _MARKER).write_text(json.dumps({'args': args, 'source': str(src), 'files': files}, indent=1))
    if dst.exists():
      dst.rmdir()   # empty (checked above)
    os.replace(tmp, dst)
  except OSError:   # the rename lost to another process making the same folder (ENOTEMPTY): theirs is as good
    shutil.rmtree(tmp, ignore_errors=True)
    if not (marker.is_file() and json.loads(marker.read_text()).get('args') == args):
      raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return files
