"""Fashion-MNIST loading and the TF-free tfds dataset, on the real files."""

import gzip
import os
import pathlib

import numpy as np
import pytest

from jaxssl.data import fashion_mnist as fm

FILES = [f + '.gz' for f in fm._FILES]  # pylint: disable=protected-access  # the module's own file list


def _real_dir():
  """$JAXSSL_FASHION_MNIST_DIR (set by CI), else <repo>/../shared/data/fashion_mnist."""
  env = os.environ.get(fm.ENV_VAR)
  d = pathlib.Path(env) if env else pathlib.Path(__file__).resolve().parents[1].parent / 'shared/data/fashion_mnist'
  return d if all((d / f).is_file() for f in FILES) else None


REAL = _real_dir()
needs_real = pytest.mark.skipif(
    REAL is None,
    reason=f'real Fashion-MNIST files not found: set {fm.ENV_VAR} or put them in ../shared/data/fashion_mnist')


@pytest.fixture(scope='module')
def arrays():
  return {s: fm.load_arrays(s, str(REAL)) for s in ('train', 'test')}


@pytest.fixture(scope='module')
def prepared(tfds_dir):
  """The session's data_dir, prepared from the real files by the same call (tests/conftest.py): not again here."""
  return pathlib.Path(tfds_dir)


@needs_real
def test_load_arrays(arrays):
  for split, n, first in [('train', 60000, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]),
                          ('test', 10000, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])]:
    x, y = arrays[split]
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64
    assert y[:10].tolist() == first
    assert np.bincount(y).tolist() == [n // 10] * 10
  x = arrays['train'][0] / 255.0
  assert round(float(x.mean()), 4) == fm.MEAN and round(float(x.std()), 4) == fm.STD
  assert len(fm.CLASS_NAMES) == 10 and fm.CLASS_NAMES[9] == 'Ankle boot'


@needs_real
def test_prepared_source_matches_official_order(prepared, arrays):
  for split, n in [('train', 60000), ('test', 10000)]:
    src = fm.data_source(split, data_dir=str(prepared))
    x, y = arrays[split]
    assert len(src) == n
    idx = [0, n - 1, *np.random.default_rng(0).integers(0, n, 64).tolist()]
    for i, rec in zip(idx, src.__getitems__(idx)):
      assert rec['index'] == i and rec['label'] == y[i]
      assert rec['image'].dtype == np.uint8 and rec['image'].shape == (28, 28, 1)
      np.testing.assert_array_equal(rec['image'], x[i])
  # Whole test split, in order: record i is image i of the official file.
  src = fm.data_source('test', data_dir=str(prepared))
  recs = src.__getitems__(list(range(10000)))
  np.testing.assert_array_equal(np.stack([r['image'] for r in recs]), arrays['test'][0])
  assert [r['label'] for r in recs] == arrays['test'][1].tolist()


@needs_real
def test_prepared_source_needs_no_source_files(prepared, monkeypatch, tmp_path):
  # Once prepared, the .gz files are neither needed nor re-verified.
  monkeypatch.delenv(fm.ENV_VAR, raising=False)
  monkeypatch.setattr(fm, 'find_source_dir', lambda *a, **k: pytest.fail('re-read the sources'))
  src = fm.data_source('train', data_dir=str(prepared), source_dir=str(tmp_path / 'gone'))
  assert len(src) == 60000
  assert len(fm.data_source('train[:100]', data_dir=str(prepared))) == 100
  assert fm.FashionMnist(data_dir=str(prepared)).info.splits['test'].num_examples == 10000


@needs_real
def test_interrupted_prepare_is_not_taken_as_done(monkeypatch, tmp_path):
  def boom(split, source_dir=None):
    raise KeyboardInterrupt('simulated interruption')
  monkeypatch.setattr(fm, 'load_arrays', boom)
  with pytest.raises(KeyboardInterrupt):
    fm.data_source('test', data_dir=str(tmp_path), source_dir=str(REAL))
  assert not fm.FashionMnist(data_dir=str(tmp_path)).is_prepared()
  assert not (tmp_path / fm.FashionMnist.name / '1.0.0').exists()
  # A hard kill leaves tfds' 'incomplete.*' dir behind; it must not count either.
  (tmp_path / fm.FashionMnist.name / 'incomplete.ABC123_1.0.0').mkdir(parents=True)
  assert not fm.FashionMnist(data_dir=str(tmp_path)).is_prepared()


@needs_real
def test_source_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.setenv(fm.ENV_VAR, str(REAL))
  assert fm.find_source_dir() == REAL
  monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / 'nope'))
  assert fm.find_source_dir(str(REAL)) == REAL  # the explicit argument wins


@needs_real
def test_download_path(monkeypatch, tmp_path):
  # The real urllib downloader, pointed at a file:// URL instead of the network.
  monkeypatch.delenv(fm.ENV_VAR, raising=False)
  monkeypatch.setattr(fm, 'DEBIAN_DIR', tmp_path / 'no-debian')
  monkeypatch.setattr(fm, 'URL', REAL.as_uri() + '/')
  dl = tmp_path / 'downloads'
  assert fm.find_source_dir(download_dir=str(dl)) == dl
  assert sorted(p.name for p in dl.iterdir()) == sorted(FILES)  # no '.part' left over


@needs_real
def test_wrong_checksum_names_the_file(tmp_path):
  for f in FILES:
    os.symlink(REAL / f, tmp_path / f)
  bad = 'train-labels-idx1-ubyte.gz'
  data = bytearray(gzip.decompress((REAL / bad).read_bytes()))
  data[100] ^= 1  # still a well-formed IDX file, just not the official one
  (tmp_path / bad).unlink()
  (tmp_path / bad).write_bytes(gzip.compress(bytes(data)))
  with pytest.raises(fm.ChecksumError, match=bad) as e:
    fm.find_source_dir(str(tmp_path))
  # pylint: disable-next=protected-access  # the message names the official checksum, from the module's own table
  assert fm._FILES['train-labels-idx1-ubyte'][0] in str(e.value) and 'got' in str(e.value)


def test_nothing_found_explains_the_fix(monkeypatch, tmp_path):
  def offline(url, dest):
    raise OSError('network is unreachable')
  monkeypatch.delenv(fm.ENV_VAR, raising=False)
  monkeypatch.setattr(fm, 'DEBIAN_DIR', tmp_path / 'no-debian')
  monkeypatch.setattr(fm, '_download', offline)
  monkeypatch.setattr(fm, '_default_download_dir', lambda: tmp_path / 'default-dl')
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(fm.DataNotFoundError) as e:
    fm.find_source_dir(str(empty), download_dir=str(tmp_path / 'dl'))
  msg = str(e.value)
  assert isinstance(e.value, ValueError)
  for needle in [str(empty), 'missing train-images-idx3-ubyte.gz', str(tmp_path / 'no-debian'),
                 'network is unreachable', '--config.data.source_dir=DIR', f'{fm.ENV_VAR}=DIR',
                 'apt-get install dataset-fashion-mnist', 'online']:
    assert needle in msg
  with pytest.raises(fm.DataNotFoundError):
    fm.load_arrays('train', str(empty))


def test_read_idx_checks_the_header(tmp_path):
  labels = np.arange(10, dtype=np.uint8)
  good = (2049).to_bytes(4, 'big') + (10).to_bytes(4, 'big') + labels.tobytes()
  (tmp_path / 'raw').write_bytes(good)
  np.testing.assert_array_equal(fm.read_idx(tmp_path / 'raw'), labels)
  (tmp_path / 'good.gz').write_bytes(gzip.compress(good))
  np.testing.assert_array_equal(fm.read_idx(tmp_path / 'good.gz'), labels)
  (tmp_path / 'magic.gz').write_bytes(gzip.compress((2050).to_bytes(4, 'big') + good[4:]))
  with pytest.raises(ValueError, match='magic'):
    fm.read_idx(tmp_path / 'magic.gz')
  (tmp_path / 'short.gz').write_bytes(gzip.compress(good[:-1]))
  with pytest.raises(ValueError, match='shape'):
    fm.read_idx(tmp_path / 'short.gz')


def test_unknown_split(tmp_path):
  with pytest.raises(ValueError, match=r"\['test', 'train'\]"):
    fm.load_arrays('validation')
  with pytest.raises(ValueError, match=r"\['test', 'train'\]"):
    fm.data_source('val', data_dir=str(tmp_path))


@needs_real
def test_pad_to_32_centres_the_real_images(tfds_dir, arrays):
  """data.pad_to=32: the model sees 32x32x1, each image is the official one with 2 px of background around it."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jaxssl.data import datasets  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict({'data_dir': tfds_dir, 'source_dir': '', 'pad_to': 32})
  info = datasets.get_dataset('fashion_mnist', cfg)
  assert info.input_shape == (32, 32, 1)
  src = datasets.load_split(info, 'test', cfg)
  x, y = arrays['test']
  idx = [0, 9999, 1234]
  for i, rec in zip(idx, [src[idx[0]], *src.__getitems__(idx[1:])]):
    assert rec['image'].shape == (32, 32, 1) and rec['label'] == y[i]
    np.testing.assert_array_equal(rec['image'][2:30, 2:30], x[i])
    assert rec['image'].sum() == x[i].astype(np.int64).sum()  # the border is zeros
  with pytest.raises(ValueError, match='pad_to=20.*at least 28'):
    datasets.get_dataset('fashion_mnist', ml_collections.ConfigDict({'pad_to': 20}))


def test_a_given_folder_that_is_not_there_is_one_warning_naming_the_copy_used(generated_fmnist, monkeypatch,
                                                                              tmp_path, capsys, caplog):
  """README, Data: the files come from the folder given, else Debian's, else the download. A folder given that
  does not exist (or lacks a file) is passed over, no longer in silence: one line of warning names it, why, and the
  copy used instead. The first preparation logs no tfds 'Variant folder ... has no dataset_info.json' line."""
  from conftest import checked_as_official  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(fm, 'DEBIAN_DIR', generated_fmnist.folder)   # stands in for Debian's copy
  monkeypatch.delenv(fm.ENV_VAR, raising=False)
  gone = tmp_path / 'nonexist'
  with checked_as_official(generated_fmnist), caplog.at_level('INFO'):
    assert len(fm.data_source('test', data_dir=str(tmp_path / 'tfds'), source_dir=str(gone))) == 256
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: --config.data.source_dir={gone}: no such directory; using Debian's copy "
                   f'{generated_fmnist.folder} instead (the same files, checked by their sha256): fix or unset '
                   '--config.data.source_dir to silence this']
    assert 'dataset_info.json' not in caplog.text
    (tmp_path / 'half').mkdir()
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / 'half'))
    assert fm.find_source_dir() == generated_fmnist.folder
    assert capsys.readouterr().err.strip().splitlines() == [
        f'warning: {fm.ENV_VAR}={tmp_path / "half"}: missing {", ".join(FILES)}; using Debian\'s copy '
        f'{generated_fmnist.folder} instead (the same files, checked by their sha256): fix or unset {fm.ENV_VAR} to '
        'silence this']
    monkeypatch.delenv(fm.ENV_VAR)
    assert fm.find_source_dir() == generated_fmnist.folder     # nothing given: Debian's copy, no warning
    assert fm.find_source_dir(str(generated_fmnist.folder)) == generated_fmnist.folder
    assert not capsys.readouterr().err
