"""The decoded-image cache (jaxssl/data/decoded.py) on the real DeepFashion sample's JPEGs: batches are the same
with it and without, in one process and across grain's workers; the cache fills as the first epoch reads and is
read after; data prepared again is cached anew; a split it cannot hold is read as before, and says why."""

import os

import ml_collections
import numpy as np
import pytest

from configs import deepfashion_multitask
from jaxssl.data import datasets, decoded, pipeline
from jaxssl.data.sources import IndexedSubset, read_records
from jaxssl.tasks import build_tasks

BATCH = 32


def _config(sample_dir, data_dir):
  c = deepfashion_multitask.get_config('sample,quick')
  c.data.source_dir, c.data.data_dir, c.data.image_size = str(sample_dir), str(data_dir), 64
  c.tasks.multitask.crop_size = 48
  return c


@pytest.fixture(scope='module')
def sample(deepfashion_sample, tmp_path_factory):
  """The sample prepared at 64 px (JPEG), its training split and the multitask task."""
  c = _config(deepfashion_sample, tmp_path_factory.mktemp('tfds'))
  info = datasets.get_dataset(c.data.name, c.data)
  tasks, _ = build_tasks(c.tasks, info)
  return c, info, tasks


def _batches(source, tasks, n, **options):
  it = pipeline.train_iterator(source, tasks, global_batch=BATCH, seed=0, **options)
  try:
    return [next(it) for _ in range(n)]
  finally:
    it.close()


def _equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for task in x:
      assert x[task].keys() == y[task].keys()
      for k in x[task]:
        np.testing.assert_array_equal(x[task][k], y[task][k], err_msg=k)


def test_cached_batches_are_the_decoded_ones_in_one_process_and_across_workers(sample, capsys):
  c, info, tasks = sample
  plain = datasets.load_split(info, 'train', c.data)
  epochs = 2 * -(-len(plain) // BATCH)   # the first epoch fills the cache, the second reads it
  expected = _batches(plain, tasks, epochs)
  cached = datasets.load_split(info, 'train', c.data)
  got = _batches(cached, tasks, epochs, decoded_cache=True)
  line = capsys.readouterr().out
  assert 'decoded-image cache: ' in line and f'({len(plain):,} images, ' in line and \
      ', 0 filled, 0 whole records)' in line, line
  _equal(got, expected)
  stem, why = decoded.cache_path(cached)
  assert why == '' and stem.startswith(os.path.join(str(info_dir(cached)), 'decoded', 'train-'))
  filled = np.load(stem + '.filled.npy')
  images = np.load(stem + '.images.npy', mmap_mode='r')
  assert (filled == decoded.WHOLE).all() and images.shape == (len(plain), 64, 64, 3)
  for i in (0, len(plain) // 2, len(plain) - 1):   # a row is the decoder's image, bit for bit
    np.testing.assert_array_equal(images[i], read_records(plain, [i])[0]['image'])
  # Whole records come from the cache alone: with nothing to read them from, every record is still the same.
  whole = decoded.use_cache(datasets.load_split(info, 'train', c.data))[0]
  whole.source = None
  _same_records(read_records(whole, range(len(plain))), read_records(plain, range(len(plain))))
  # The source the run holds still decodes its own images (the cache reads through a copy of it).
  assert read_records(cached, [0])[0]['image'].shape == (64, 64, 3)
  # Two grain workers read the filled cache (each opens it): the same batches again.
  _equal(_batches(datasets.load_split(info, 'train', c.data), tasks, 4, decoded_cache=True, num_workers=2),
         expected[:4])
  assert f'{len(plain):,} filled, {len(plain):,} whole records)' in capsys.readouterr().out


def _same_records(got, expected):
  assert len(got) == len(expected)
  for a, b in zip(got, expected):
    assert list(a) == list(b)   # the same fields in the same order
    for key in a:
      if isinstance(a[key], np.ndarray):
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
      else:
        assert type(a[key]) is type(b[key]) and a[key] == b[key], key


def test_records_whose_fields_do_not_fit_their_slot_keep_only_their_image_there(sample, tmp_path):
  c, info, _ = sample
  plain = datasets.load_split(info, 'train', c.data)
  tiny = decoded.DecodedImages(plain, str(tmp_path / 'cache'), (64, 64, 3), slot_bytes=16)
  first = read_records(tiny, range(8))
  again = read_records(tiny, range(8))   # the images from the cache, the fields from the records
  assert tiny.filled() == 8 and tiny.whole() == 0
  _same_records(first, read_records(plain, range(8)))
  _same_records(again, first)


def info_dir(source):
  return source.dataset_info.data_dir


def test_a_view_of_the_split_reads_through_the_cache_in_place(sample):
  c, info, _ = sample
  part = IndexedSubset(datasets.load_split(info, 'train', c.data), [5, 3, 8, 1])
  expected = read_records(part, range(4))
  same, line = decoded.use_cache(part)
  assert same is part and isinstance(part.source, decoded.DecodedImages), line
  for a, b in zip(read_records(part, range(4)), expected):
    np.testing.assert_array_equal(a['image'], b['image'])
  assert decoded.use_cache(part)[0].source is part.source   # once: a second call finds it


def test_data_prepared_again_is_cached_anew_and_what_cannot_be_cached_says_why(sample, tfds_dir):
  c, info, _ = sample
  source = datasets.load_split(info, 'train', c.data)
  stem, _ = decoded.cache_path(source)
  prepared = [os.path.join(info_dir(source), f) for f in os.listdir(info_dir(source)) if '-train.array_record' in f]
  st = os.stat(prepared[0])
  os.utime(prepared[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
  try:
    assert decoded.cache_path(source)[0] != stem
  finally:
    os.utime(prepared[0], ns=(st.st_atime_ns, st.st_mtime_ns))
  assert decoded.cache_path(source)[0] == stem
  # Fashion-MNIST is stored as arrays: read as before, and the line says why.
  fm = ml_collections.ConfigDict({'name': 'fashion_mnist', 'data_dir': tfds_dir, 'source_dir': ''})
  fm_info = datasets.get_dataset('fashion_mnist', fm)
  fm_source = datasets.load_split(fm_info, 'train', fm)
  same, line = decoded.use_cache(fm_source)
  assert same is fm_source and line == ('decoded-image cache: not used (the images are stored as arrays, not '
                                        'encoded: nothing to decode)')
  assert decoded.use_cache([{'image': np.zeros((2, 2, 1), np.uint8)}])[1] == \
      'decoded-image cache: not used (the source is not prepared tfds data)'


def test_the_setting_is_on_with_an_accelerator_and_off_on_a_cpu_unless_set():
  def resolved(value, backend, processes=1):
    data = ml_collections.ConfigDict({'decoded_cache': value})
    return pipeline.input_settings(data, cores=16, backend=backend, processes=processes)
  assert not resolved('auto', 'cpu').decoded_cache and resolved('auto', 'gpu').decoded_cache
  assert resolved('on', 'cpu').decoded_cache and not resolved('off', 'gpu').decoded_cache
  assert not resolved('auto', 'gpu', processes=2).decoded_cache and resolved('on', 'gpu', processes=2).decoded_cache
  assert resolved('auto', 'gpu').line() == 'input: 14 workers x 2 threads, prefetch 2, decoded-image cache (auto: 16 ' \
                                          'cores, gpu)'
  with pytest.raises(ValueError, match="data.decoded_cache must be one of auto, on, off, not 'yes'"):
    resolved('yes', 'gpu')


def test_a_run_with_the_cache_ends_as_the_run_without_it(deepfashion_sample, tmp_path, capsys):
  from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
  finals = {}
  for mode in ('off', 'on'):
    c = _config(deepfashion_sample, tmp_path / 'tfds')
    c.model.name, c.model.options = 'cifarnet', {'dropout': 0.0}
    c.data.decoded_cache = mode
    c.batch_size, c.eval_batch_size = 8, 16
    c.total_steps, c.eval_every, c.checkpoint_every, c.log_every = 3, 0, 3, 1
    finals[mode] = loop.train_and_evaluate(c, str(tmp_path / mode))['eval']
  assert 'input: 0 workers x 1 thread, prefetch 4, decoded-image cache (auto: ' in capsys.readouterr().out
  assert finals['on'] == finals['off']


def test_a_cache_left_unsynced_by_an_earlier_boot_is_filled_again_and_a_synced_one_kept(sample, tmp_path, capsys,
                                                                                         monkeypatch):
  """After a crash the disk may hold a row's flag without its pixels: a cache written in another boot and not synced
  since is forgotten and filled again; one completed (synced when first seen full) is kept."""
  c, info, _ = sample
  plain = datasets.load_split(info, 'train', c.data)
  stem = str(tmp_path / 'cache')
  cache = decoded.DecodedImages(plain, stem, (64, 64, 3))
  expected = read_records(cache, range(10))
  with open(stem + '.boot', 'w', encoding='utf-8') as f:
    f.write('an-earlier-boot')   # as if these 10 rows were written before the machine stopped
  again = decoded.DecodedImages(plain, stem, (64, 64, 3))
  assert again.filled() == 0 and 'it is filled again' in capsys.readouterr().out
  _same_records(read_records(again, range(10)), expected)
  assert again.filled() == 10 and not again.synced()
  # Full, then synced by the reader that filled rows when it next finds every record there: another boot keeps it.
  read_records(again, range(len(plain)))
  assert not again.synced()
  read_records(again, range(4))
  assert again.synced() and again.whole() == len(plain)
  monkeypatch.setattr(decoded, '_boot_id', lambda: 'the-next-boot')
  assert decoded.DecodedImages(plain, stem, (64, 64, 3)).whole() == len(plain)
  assert 'filled again' not in capsys.readouterr().out


def test_flags_without_their_boot_marker_are_forgotten_and_files_not_ours_are_read_as_before(sample, tmp_path,
                                                                                              monkeypatch):
  c, info, _ = sample
  plain = datasets.load_split(info, 'train', c.data)
  stem = str(tmp_path / 'cache')
  expected = read_records(decoded.DecodedImages(plain, stem, (64, 64, 3)), range(6))
  os.remove(stem + '.boot')   # the marker did not reach the disk before the machine stopped
  again = decoded.DecodedImages(plain, stem, (64, 64, 3))
  assert again.filled() == 0
  _same_records(read_records(again, range(6)), expected)
  # Cache files it cannot open (here a folder where a file should be; another user's files fail the same way): the
  # split is read as before, in one line.
  source = datasets.load_split(info, 'train', c.data)
  stem = str(tmp_path / 'theirs')
  os.makedirs(stem + '.images.npy')
  monkeypatch.setattr(decoded, 'cache_path', lambda _: (stem, ''))   # where this split's cache is, here
  same, line = decoded.use_cache(source)
  assert same is source and line == f'decoded-image cache: not used ({stem}: Is a directory)', line
