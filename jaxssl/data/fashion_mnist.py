"""Fashion-MNIST as a TensorFlow-free tfds dataset (ArrayRecord, random access).

The four official IDX files are located (explicit dir / env var, then the
Debian package, then the official download), verified by the sha256 of their
decompressed bytes, and prepared once into ArrayRecord under a tfds data_dir.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import sys
import urllib.request
import zlib

import numpy as np
import tensorflow_datasets as tfds

from jaxssl.data.prepared import is_prepared, prepare_once
from jaxssl.runlog import log

CLASS_NAMES: tuple[str, ...] = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
    'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
MEAN, STD = 0.2860, 0.3530  # train pixel stats on [0, 1]
SPLITS = {'train': 60000, 'test': 10000}
ENV_VAR = 'JAXSSL_FASHION_MNIST_DIR'
DEBIAN_DIR = pathlib.Path('/usr/share/datasets/fashion-mnist')
# S3 *website* endpoints serve plain http only (as tfds' own fashion_mnist
# uses); integrity comes from the sha256 check, not from TLS.
URL = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
DOWNLOAD_TIMEOUT_S = 20

# sha256 and size of the DECOMPRESSED bytes: the Debian .gz files carry other
# gzip headers than upstream, so only the payload is comparable.
_FILES = {
    'train-images-idx3-ubyte': ('c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888', 47040016),
    'train-labels-idx1-ubyte': ('bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9', 60008),
    't10k-images-idx3-ubyte': ('5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b', 7840016),
    't10k-labels-idx1-ubyte': ('0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34', 10008),
}
_PREFIX = {'train': 'train', 'test': 't10k'}
_HOW_TO = (
    f'Provide the four Fashion-MNIST .gz files ({", ".join(f + ".gz" for f in _FILES)}) in one of these ways:\n'
    f'  * set --config.data.source_dir=DIR or {ENV_VAR}=DIR to a folder holding them;\n'
    f'  * apt-get install dataset-fashion-mnist  (Debian/Ubuntu; installs {DEBIAN_DIR});\n'
    f'  * be online, so they can be downloaded from {URL}.')
# Files already verified in this process, keyed by (path, size, mtime), so
# load_arrays after find_source_dir does not hash 50 MB twice.
_verified: set[tuple[str, int, int]] = set()


class DataNotFoundError(ValueError):
  """No usable copy of the Fashion-MNIST files could be found or fetched."""


class ChecksumError(ValueError):
  """A Fashion-MNIST file is present but its content is not the official one.

  ``problem`` is the message without its fix ('<file>: <the check that failed>'), for callers that know a
  better fix than replacing the file by hand (the download folder fetches it again).
  """

  def __init__(self, problem: str, fix: str = 'replace this file with the official one'):
    super().__init__(f'{problem}; {fix}.')
    self.problem = problem


def _check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f'Unknown Fashion-MNIST split {split!r}; valid splits: {sorted(SPLITS)}.')
  return split


def _gunzip(path: pathlib.Path, data: bytes) -> bytes:
  """The decompressed bytes; a damaged file (bad header, corrupt deflate stream, wrong CRC, cut short) is a
  ChecksumError naming it. zlib.error is neither an OSError nor an EOFError, so it is caught by name."""
  try:
    return gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    kind = type(e).__name__ if type(e).__module__ == 'builtins' else f'{type(e).__module__}.{type(e).__name__}'
    raise ChecksumError(f'{path}: not a valid gzip file, decompressing failed ({kind}: {e})') from e


def _verify(path: pathlib.Path) -> None:
  st = path.stat()
  key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
  if key in _verified:
    return
  want_sha, want_size = _FILES[path.name[:-len('.gz')]]
  data = _gunzip(path, path.read_bytes())
  got = hashlib.sha256(data).hexdigest()
  if got != want_sha or len(data) != want_size:
    raise ChecksumError(
        f'{path}: wrong content; decompressed sha256 expected {want_sha} ({want_size} bytes), '
        f'got {got} ({len(data)} bytes)')
  _verified.add(key)


def _missing(d: pathlib.Path) -> list[str]:
  return [f + '.gz' for f in _FILES if not (d / (f + '.gz')).is_file()]


def _download(url: str, dest: pathlib.Path) -> None:
  """Fetches url into dest atomically, so an interrupted download leaves no file."""
  tmp = dest.with_name(dest.name + '.part')
  with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, 'wb') as f:
    while chunk := resp.read(1 << 20):
      f.write(chunk)
  os.replace(tmp, dest)


def _default_download_dir() -> pathlib.Path:
  root = os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'
  return pathlib.Path(root).expanduser() / 'downloads' / 'fashion_mnist'


def find_source_dir(source_dir: str | None = None, *, download_dir: str | None = None) -> pathlib.Path:
  """Returns a directory holding the four verified .gz files.

  Tries `source_dir` (else $JAXSSL_FASHION_MNIST_DIR), then DEBIAN_DIR, then
  downloads into `download_dir` (default <tfds data_dir>/downloads/fashion_mnist).
  A complete directory with a corrupt file raises ChecksumError rather than
  silently falling back, so a broken copy never goes unnoticed; only in the
  download folder, jaxssl's own, is a corrupt file deleted and fetched again.
  A given folder that does not exist or lacks a file is passed over with one
  line of warning on stderr, naming it and the copy used instead (the same
  files, by their checksums); where no source works, the error lists them all.
  """
  tried = []
  explicit = source_dir if source_dir is not None else os.environ.get(ENV_VAR)
  origin = 'source_dir argument' if source_dir is not None else f'${ENV_VAR}'
  candidates = [(pathlib.Path(explicit).expanduser(), origin)] if explicit else []
  if not explicit:
    tried.append(f'source_dir argument / ${ENV_VAR}: not set')
  candidates.append((DEBIAN_DIR, 'Debian package dataset-fashion-mnist'))
  passed_over = ''   # why the folder given was not used
  for d, origin in candidates:
    if not d.is_dir():
      tried.append(f'{d} ({origin}): no such directory')
    elif missing := _missing(d):
      tried.append(f'{d} ({origin}): missing {", ".join(missing)}')
    else:
      for f in _FILES:
        _verify(d / (f + '.gz'))
      if passed_over:
        _warn_passed_over(source_dir, passed_over, f"Debian's copy {d}")
      return d
    if explicit and not passed_over:
      passed_over = tried[-1].split('): ', 1)[1]

  dl = pathlib.Path(download_dir) if download_dir else _default_download_dir()
  try:
    dl.mkdir(parents=True, exist_ok=True)
    for f in _FILES:
      _fetch_verified(f + '.gz', dl)
  except ChecksumError:
    raise
  except Exception as e:  # offline, DNS, timeout, read-only disk...: all mean "not available"
    tried.append(f'download from {URL} into {dl}: {type(e).__name__}: {e}')
    raise DataNotFoundError(
        'Fashion-MNIST files not found. Tried:\n' + ''.join(f'  - {t}\n' for t in tried) + _HOW_TO) from e
  if passed_over:
    _warn_passed_over(source_dir, passed_over, f'the download in {dl}')
  return dl


def _warn_passed_over(source_dir: str | None, problem: str, used: str) -> None:
  """One line on stderr: the folder given (``source_dir``, else $JAXSSL_FASHION_MNIST_DIR) was not used, why,
  and what was used instead."""
  given = (f'--config.data.source_dir={source_dir}' if source_dir is not None else
           f'{ENV_VAR}={os.environ.get(ENV_VAR)}')
  print(f'warning: {given}: {problem}; using {used} instead (the same files, checked by their sha256): fix or '
        f'unset {given.split("=", 1)[0]} to silence this', file=sys.stderr)


def _fetch_verified(name: str, dl: pathlib.Path) -> None:
  """Makes ``dl/name`` a verified copy, downloading it where it is absent or fails verification.

  Only the download folder is repaired this way: every file there came from :func:`_download`, so a copy that
  fails (a download garbled in transit, a disk error since) is jaxssl's own to delete and fetch again, once; a
  second failure is an error naming the file and the check, and leaves no copy behind. A user's folder or
  Debian's is never touched: its corrupt file is an error (see :func:`find_source_dir`).
  """
  path = dl / name
  url = URL + name
  if not path.is_file():
    _download(url, path)  # failing here means "not available", as any download failure (find_source_dir)
  try:
    _verify(path)
    return
  except ChecksumError as e:
    first = e
  path.unlink()
  fix = f'download it yourself and pass --config.data.source_dir=DIR or set {ENV_VAR}=DIR'
  try:
    _download(url, path)
  except Exception as e:  # pylint: disable=broad-except  # offline, timeout, disk...: the message says which
    raise ChecksumError(f'{first.problem}; deleted it, and fetching it again from {url} failed '
                        f'({type(e).__name__}: {e})', f'be online and rerun, or {fix}') from e
  try:
    _verify(path)
  except ChecksumError as e:
    path.unlink()
    raise ChecksumError(f'{e.problem}; downloaded twice from {url}, both copies failed verification and were '
                        'deleted, so the server or a proxy serves a damaged file', fix) from e


def _parse_idx(data: bytes, name: str) -> np.ndarray:
  if len(data) < 8 or data[:2] != b'\0\0' or data[2] != 0x08:
    raise ValueError(f'{name}: not an unsigned-byte IDX file (header {data[:4].hex()}).')
  magic, ndim = int.from_bytes(data[:4], 'big'), data[3]
  if magic not in (2049, 2051):
    raise ValueError(f'{name}: bad IDX magic number {magic}; expected 2049 (labels) or 2051 (images).')
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  if len(data) != header + int(np.prod(shape)):
    raise ValueError(f'{name}: IDX header says shape {shape} but the file has {len(data) - header} data bytes.')
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx(path) -> np.ndarray:
  """Reads a .gz or raw IDX file of unsigned bytes into an array of its shape."""
  path = pathlib.Path(path)
  data = path.read_bytes()
  if data[:2] == b'\x1f\x8b':  # gzip magic, whatever the file is called
    data = _gunzip(path, data)
  return _parse_idx(data, str(path))


def load_arrays(split: str, source_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images uint8 [N,28,28,1], labels int64 [N]) in official file order."""
  prefix = _PREFIX[_check_split(split)]
  d = find_source_dir(source_dir)
  images = read_idx(d / f'{prefix}-images-idx3-ubyte.gz')
  labels = read_idx(d / f'{prefix}-labels-idx1-ubyte.gz')
  n = SPLITS[split]
  if images.shape != (n, 28, 28) or labels.shape != (n,):
    raise ValueError(f'{d}: {split} shapes {images.shape}, {labels.shape}; expected ({n}, 28, 28), ({n},).')
  return images[..., None], labels.astype(np.int64)


class FashionMnist(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST with raw uint8 images, keyed so records keep the official order."""

  name = 'jaxssl_fashion_mnist'  # tfds ships its own 'fashion_mnist'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Raw uint8 Tensor images, ArrayRecord, official order, `index` field.'}

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    # Resolved only in _split_generators: reading an already prepared
    # dataset must not touch (or require) the .gz files.
    self._source_dir = source_dir
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Fashion-MNIST: 28x28 grayscale images of 10 clothing classes (Zalando Research).',
        features=tfds.features.FeaturesDict({
            # BYTES: the default would upcast every pixel to an int64
            # varint; raw bytes prepare ~2.4x faster and read faster.
            'image': tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8, encoding='bytes'),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
            'index': tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=('image', 'label'),
        # Keys are the file positions; without shuffling tfds writes them
        # sorted, so record i is example i of the official file.
        disable_shuffling=True,
        homepage='https://github.com/zalandoresearch/fashion-mnist',
        citation='Xiao, Rasul, Vollgraf. Fashion-MNIST: a Novel Image Dataset for '
                 'Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.',
        license='MIT',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # we fetch ourselves: several sources, checksums of decompressed bytes
    d = find_source_dir(self._source_dir,
                        download_dir=os.path.join(self._data_dir_root, 'downloads', 'fashion_mnist'))
    return {split: self._generate_examples(split, d) for split in SPLITS}

  def _generate_examples(self, split: str, source_dir: pathlib.Path):
    images, labels = load_arrays(split, str(source_dir))
    for i, label in enumerate(labels):
      yield i, {'image': images[i], 'label': int(label), 'index': i}


def data_source(split: str, *, data_dir: str, source_dir: str | None = None):
  """Random-access source of {'image', 'label', 'index'} records, preparing data_dir once.

  `split` is 'train' or 'test', optionally with a tfds slice ('train[:1000]').
  """
  _check_split(split.split('[', 1)[0])
  builder = FashionMnist(data_dir=data_dir, source_dir=source_dir)
  # is_prepared requires the final version dir with its json files; tfds
  # writes into an 'incomplete.*' dir and renames it only on success, so an
  # interrupted run is never mistaken for a finished one.
  if not is_prepared(builder):
    log(f'preparing Fashion-MNIST once into {data_dir} (about 15 s)')
    builder, _ = prepare_once(builder, lambda: FashionMnist(data_dir=data_dir, source_dir=source_dir))
  return builder.as_data_source(split=split)
