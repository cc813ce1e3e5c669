"""The decoded-image cache (``data.decoded_cache``): each training image of a JPEG-stored split decoded once, into a
uint8 array file beside the prepared data, and read from there ever after.

Decoding is most of what the input pipeline spends on a photo dataset (jaxssl/data/jpeg.py): at 256 px, reading
and decoding a DeepFashion record takes ~450 us of a core, so an accelerator that trains DeepFashion's AlexNet
at 34k images/s in bfloat16 would need ~25 cores of decoding. A row of the cache is a memory copy from the page
cache (~30-55 us at 256 px on a 2-core CPU, measured 2026-11-30), and the record's other fields (labels,
attributes, its file name) come pickled from a slot beside it, so a record in the cache costs no ArrayRecord read
and no tfds parsing either (~95 us of Python per DeepFashion record). The files hold ``N x H x W x C`` bytes
(DeepFashion's 289k training images at 256 px: 57 GB), a slot per record (twice the first record's fields, at
least 512 bytes; a record whose fields do not fit keeps only its image here) and a flag byte; they are created
with their blocks reserved (a disk that fills up later cannot fault a write into them) and filled as the first
epoch reads (a row is written, then its flag), by every process and worker that
reads, so the first epoch costs what it did and no pass is made up front. The pixels are the decoder's, bit for
bit, and the fields tfds's: batches, and resumed runs, are the same with the cache and without.

A process ending, even killed, loses nothing written (the pages are the kernel's); a machine that stops while the
cache is being filled can leave a flag on disk without its row, so a cache written in an earlier boot and not
synced since (it is synced when first seen full) is filled again, and the log says so.

The file's name holds the split, its shape and a hash of the prepared files' names, sizes and modification times:
data prepared again is cached anew. A split it cannot hold (PNG or varying image sizes, not prepared tfds data)
or a disk without the room is read as before, and the run's log says why.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import os
import pickle
import shutil
from typing import Any

import numpy as np

from jaxssl import files
from jaxssl.data.sources import find_under, is_tfds_source, read_records
from jaxssl.runlog import log

MARGIN_BYTES = 2 << 30   # left free on the disk beyond the cache's own size


def _tfds_chain(source) -> tuple[Any, Any]:
  """(the view holding it or None, the tfds data source or the cache already over it) under jaxssl's views."""
  return find_under(source, lambda s: isinstance(s, DecodedImages) or is_tfds_source(s))


def cache_path(tfds_source) -> tuple[str | None, str]:
  """(the cache's path stem, '') for a tfds source whose images it can hold, else (None, why not)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  info = tfds_source.dataset_info
  features = getattr(info, 'features', None)
  image = features['image'] if features is not None and 'image' in features.keys() else None
  if image is None:
    return None, 'the records have no image feature'
  if not isinstance(image, tfds.features.Image):
    return None, 'the images are stored as arrays, not encoded: nothing to decode'
  if image.encoding_format == 'png':
    return None, 'the images are stored as PNG (decoding them costs little)'
  shape = tuple(image.shape)
  if None in shape:
    return None, f'the images have no one size ({shape}): a row of the cache holds one size'
  split = str(getattr(tfds_source, 'split', '') or 'split')
  if not split.isidentifier():
    return None, f"the split '{split}' is a slice of one (cached for whole splits only)"
  identity = prepared_identity(tfds_source)
  if identity is None:
    return None, f'no prepared ArrayRecord files of {split} in {info.data_dir}'
  data_dir, _, n, digest = identity
  name = f"{split}-{n}x{'x'.join(str(s) for s in shape)}-{digest[:12]}"
  return os.path.join(data_dir, 'decoded', name), ''


def prepared_identity(tfds_source) -> tuple[str, str, int, str] | None:
  """(data dir, split, records, a hash of the prepared files' names, sizes and modification times) of a tfds
  source of a whole split, which names its records for as long as the files are not prepared again; None for
  anything else (a slice of a split, a source that is not tfds's)."""
  split = str(getattr(tfds_source, 'split', '') or '')
  info = getattr(tfds_source, 'dataset_info', None)
  if info is None or not is_tfds_source(tfds_source) or not split.isidentifier():
    return None
  data_dir = str(info.data_dir)
  prepared = sorted(glob.glob(os.path.join(data_dir, f'*-{split}.array_record*')))
  if not prepared:
    return None
  digest = hashlib.sha1()
  for path in prepared:
    st = os.stat(path)
    digest.update(f'{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns};'.encode())
  return data_dir, split, len(tfds_source), digest.hexdigest()


def _read_text(path: str) -> str:
  """``path``'s text, stripped; '' where it cannot be read (not there)."""
  try:
    return files.read_text(path, errors='replace').strip()
  except OSError:
    return ''


def _write_synced(path: str, text: str) -> None:
  """``path`` replaced by ``text`` and on disk (the file and its folder's entry) before this returns."""
  temp = f'{path}.{os.getpid()}.tmp'
  with open(temp, 'w', encoding='utf-8') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temp, path)
  folder = os.open(os.path.dirname(path) or '.', os.O_RDONLY)
  try:
    os.fsync(folder)
  finally:
    os.close(folder)


def _boot_id() -> str:
  """This boot of the machine ('' where the kernel does not say)."""
  return _read_text('/proc/sys/kernel/random/boot_id')


IMAGE_ONLY, WHOLE = 1, 2   # a record's flag: its image is in the cache; its other fields too


class DecodedImages:
  """The tfds source ``source`` with its records read from the cache at ``stem``: ``.images.npy`` (the decoded
  images), ``.fields.npy`` (each record's other fields, pickled, in a slot of ``slot_bytes``) and ``.filled.npy``
  (per record 0, :data:`IMAGE_ONLY` where its fields did not fit the slot, or :data:`WHOLE`). A record read whole
  from the cache costs no ArrayRecord read and no tfds parsing; one not yet there is read, decoded and written
  (module docstring). Picklable for grain's workers: each process opens the files itself."""

  def __init__(self, source, stem: str, shape: tuple[int, ...], slot_bytes: int = 0):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    from jaxssl.data import jpeg  # pylint: disable=import-outside-toplevel
    # A copy whose records come with their image undecoded (this class decodes it, or reads it from the cache);
    # the source itself, which others may hold, still decodes its images.
    self.source = copy.copy(source)
    self.source.decoders = {**(source.decoders or {}), 'image': tfds.decode.SkipDecoding()}
    self.stem, self.shape = stem, tuple(shape)
    self.decoder = jpeg.JpegDecoder()
    self.decoder.setup(feature=source.dataset_info.features['image'])
    self._arrays, self._misses, self._marked = None, 0, False
    # A slot twice the first record's fields (at least 512 bytes): records much larger keep only their image here.
    self.slot_bytes = int(slot_bytes) or max(512, -(-(2 * len(self._fields_blob(self.source[0])) + 64) // 256) * 256)
    self.create()

  def __len__(self) -> int:
    return len(self.source)

  @property
  def dataset_info(self):
    return self.source.dataset_info

  @staticmethod
  def _fields_blob(record: dict[str, Any]) -> bytes:
    """The record without its image (its place kept: the key order is the record's), pickled."""
    return pickle.dumps({k: (None if k == 'image' else v) for k, v in record.items()}, protocol=5)

  def create(self) -> None:
    """Makes the files, sparse, unless they are there (two processes at once: one makes them, both use them)."""
    n = len(self.source)
    wanted = ((self.stem + '.filled.npy', (n,)), (self.stem + '.fields.npy', (n, self.slot_bytes)),
              (self.stem + '.images.npy', (n,) + self.shape))
    if all(os.path.exists(path) for path, _ in wanted):
      return
    os.makedirs(os.path.dirname(self.stem), exist_ok=True)
    for path, shape in wanted:
      if os.path.exists(path):
        continue
      temp = f'{path}.{os.getpid()}.tmp'
      np.lib.format.open_memmap(temp, mode='w+', dtype=np.uint8, shape=shape).flush()
      if hasattr(os, 'posix_fallocate'):   # the blocks reserved now: a disk filled later cannot fault a write
        with open(temp, 'r+b') as f:
          os.posix_fallocate(f.fileno(), 0, os.path.getsize(temp))
      try:
        os.link(temp, path)   # fails where another process made it first: theirs is used
      except FileExistsError:
        pass
      finally:
        os.remove(temp)

  def __getstate__(self):
    return {**self.__dict__, '_arrays': None, '_marked': False}

  def _open(self):
    if self._arrays is None:
      self._arrays = tuple(np.load(f'{self.stem}.{name}.npy', mmap_mode='r+')
                           for name in ('images', 'fields', 'filled'))
      self.slot_bytes = self._arrays[1].shape[1]   # the file's, where another process made it
      self._after_a_crash(self._arrays[2])
    return self._arrays

  def _after_a_crash(self, filled) -> None:
    """Forgets what the cache holds where it was written in an earlier boot of this machine and not synced to disk
    since: the kernel writes dirty pages back in no set order, so after a crash or a power loss a flag can be on disk
    without its row. A process ending, killed or not, loses nothing (the pages stay in the kernel); a cache
    completed and synced (:meth:`sync`, done when it is first seen full) is kept across reboots."""
    boot = _boot_id()
    written = _read_text(self.stem + '.boot')
    # No .boot beside set flags: the machine stopped before the marker reached the disk (it is synced before the
    # first write, but a copied or half-deleted cache can lack it too).
    torn = (written != boot and _read_text(self.stem + '.synced') != written) if written else bool(filled.any())
    if boot and torn:
      filled[:] = 0
      filled.flush()
      _write_synced(self.stem + '.boot', boot)
      log(f'decoded-image cache: {self.stem}.images.npy was being filled when this machine last stopped (not '
          'synced to disk): it is filled again')

  def _mark_writing(self) -> None:
    """Records this boot as the one whose writes the disk may not hold yet (once per process)."""
    if not self._marked:
      boot = _boot_id()
      if boot and _read_text(self.stem + '.boot') != boot:
        _write_synced(self.stem + '.boot', boot)   # on disk before any row it stands for
      self._marked = True

  def sync(self) -> bool:
    """Where every record is in the cache: flushes the files to disk and marks them synced for this boot, so
    that a later boot keeps them; whether it did."""
    images, fields, filled = self._open()
    if not np.all(filled):
      return False
    for array in (images, fields, filled):
      array.flush()
    _write_synced(self.stem + '.synced', _read_text(self.stem + '.boot') or _boot_id())
    return True

  def synced(self) -> bool:
    """Whether the cache is marked synced for the boot that wrote it."""
    written = _read_text(self.stem + '.boot')
    return bool(written) and _read_text(self.stem + '.synced') == written

  def filled(self) -> int:
    """How many images are in the cache."""
    return int(np.count_nonzero(self._open()[2]))

  def whole(self) -> int:
    """How many records are in the cache whole (image and fields)."""
    return int(np.count_nonzero(self._open()[2] == WHOLE))

  def __getitem__(self, index):
    return self.__getitems__([index])[0]

  def __getitems__(self, indices):
    images, fields, filled = self._open()
    indices = [int(i) for i in indices]
    out: list[Any] = [None] * len(indices)
    missing = []
    for k, i in enumerate(indices):
      if filled[i] == WHOLE:
        size = int.from_bytes(fields[i, :4].tobytes(), 'little')
        record = pickle.loads(fields[i, 4:4 + size].tobytes())
        record['image'] = np.array(images[i])
        out[k] = record
      else:
        missing.append(k)
    if missing:
      for k, record in zip(missing, read_records(self.source, [indices[k] for k in missing])):
        i = indices[k]
        if filled[i]:
          record['image'] = np.array(images[i])
        else:
          self._mark_writing()
          image = self.decoder.decode_example_np(record['image'])
          images[i] = image
          filled[i] = IMAGE_ONLY   # after its row: a reader that sees the flag finds the whole image
          record['image'] = image
        blob = self._fields_blob(record)
        if len(blob) + 4 <= self.slot_bytes:
          self._mark_writing()
          fields[i, :4] = np.frombuffer(len(blob).to_bytes(4, 'little'), np.uint8)
          fields[i, 4:4 + len(blob)] = np.frombuffer(blob, np.uint8)
          filled[i] = WHOLE   # after its fields
        out[k] = record
      self._misses += len(missing)
    elif self._misses:   # this process filled rows and now finds every record there: full yet? then to disk
      self._misses = 0
      self.sync()
    return out


def use_cache(source) -> tuple[Any, str]:
  """``source`` reading its images through the cache (in place where a view holds the tfds source, as
  :func:`jaxssl.data.jpeg.use_fast_decoder` does: grain's workers get the same objects), and the log line that
  says where the cache is, or why the images are decoded as before."""
  parent, tfds_source = _tfds_chain(source)
  if tfds_source is None:
    return source, 'decoded-image cache: not used (the source is not prepared tfds data)'
  if isinstance(tfds_source, DecodedImages):
    cached = tfds_source
  else:
    stem, why = cache_path(tfds_source)
    if stem is not None and len(tfds_source) == 0:
      stem, why = None, 'the split is empty'
    if stem is None:
      return source, f'decoded-image cache: not used ({why})'
    shape = tuple(tfds_source.dataset_info.features['image'].shape)
    need = len(tfds_source) * (int(np.prod(shape)) + 1 + 512)   # + a slot of fields, at least 512 bytes
    try:
      os.makedirs(os.path.dirname(stem), exist_ok=True)
    except OSError as e:
      return source, f'decoded-image cache: not used (cannot write {os.path.dirname(stem)}: {e.strerror})'
    if not os.path.exists(stem + '.images.npy'):
      free = shutil.disk_usage(os.path.dirname(stem)).free
      if free < need + MARGIN_BYTES:
        return source, (f'decoded-image cache: not used ({need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free in '
                        f'{os.path.dirname(stem)}; free some, or set data.decoded_cache=off to silence this)')
    try:
      cached = DecodedImages(tfds_source, stem, shape)
      if not cached.synced():
        cached.sync()   # full already (filled by processes that ended before seeing it full): to disk now
    except OSError as e:   # not ours to write (another user's files), no hard links, no room to reserve
      return source, f'decoded-image cache: not used ({stem}: {e.strerror or e})'
    if parent is None:
      source = cached
    else:
      parent.source = cached
  size = len(cached) * (int(np.prod(cached.shape)) + 1 + cached.slot_bytes)
  return source, (f'decoded-image cache: {cached.stem}.images.npy ({len(cached):,} images, {size / 1e9:.2f} GB, '
                  f'{cached.filled():,} filled, {cached.whole():,} whole records)')
