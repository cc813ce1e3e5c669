"""Faults in what a run reads (issue #14): each test injects one into real files or a real process and checks that
the run refuses it in one line, repairs what is its own to repair, or cleans up after itself.

Rows: a garbled .gz source file (and a corrupt download, fetched again from a local HTTP server); grain workers
of a training process killed with SIGKILL; bad step counts, split names and task options; a planted, truncated or
unloadable oneDNN library, and a cache directory other users can write to.
"""

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib

import ml_collections
import pytest

from conftest import REPO, write_generated_fashion_mnist
from configs import fmnist_supervised
from jaxssl.config_check import check_config
from jaxssl.data import datasets
from jaxssl.data import fashion_mnist as fm
from jaxssl.data.deepfashion_layouts import AnnotationError
from jaxssl.ops import onednn

FILES = [f + '.gz' for f in fm._FILES]  # pylint: disable=protected-access  # the module's own file list
SMALL = 'train-labels-idx1-ubyte.gz'     # the file the faults are put into (60 kB; the others are linked)


def _one_line(message: str) -> str:
  assert '\n' not in message.strip(), message
  return message


def _garble(data: bytes) -> bytes:
  """The gzip file with 256 bytes of its deflate stream overwritten so that decompressing raises zlib.error (the
  error that escaped), not a CRC or length error: which one a given overwrite gives depends on the data."""
  for at in (len(data) // 2, len(data) // 3, len(data) // 4):
    for fill in (0x00, 0x55, 0xaa, 0xff):
      garbled = data[:at] + bytes([fill]) * 256 + data[at + 256:]
      try:
        gzip.decompress(garbled)
      except zlib.error:
        return garbled
      except (OSError, EOFError):
        pass
  raise AssertionError('no overwrite of this file makes a zlib.error')


def _source_with_garbled(folder: pathlib.Path, real: str) -> pathlib.Path:
  """``folder`` holding the real files (linked) but a garbled copy of SMALL."""
  folder.mkdir(exist_ok=True)
  for f in FILES:
    if f != SMALL:
      os.symlink(pathlib.Path(real) / f, folder / f)
  (folder / SMALL).write_bytes(_garble((pathlib.Path(real) / SMALL).read_bytes()))
  return folder


# ----------------------------------------------------------------------------------------- garbled .gz source


def test_a_garbled_gz_is_one_line_naming_the_file_and_the_check(tmp_path, fmnist_source_dir):
  source = _source_with_garbled(tmp_path / 'mine', fmnist_source_dir)
  with pytest.raises(fm.ChecksumError) as e:
    fm.find_source_dir(str(source))
  message = _one_line(str(e.value))
  assert message.startswith(f'{source / SMALL}: not a valid gzip file, decompressing failed (zlib.error: Error -3 ')
  assert message.endswith('; replace this file with the official one.')
  assert (source / SMALL).exists()  # the user's file: named, never deleted


def test_read_idx_of_a_garbled_gz_is_a_checksum_error(tmp_path):
  path = write_generated_fashion_mnist(tmp_path, {'test': 64}).folder / 't10k-images-idx3-ubyte.gz'
  path.write_bytes(_garble(path.read_bytes()))
  with pytest.raises(fm.ChecksumError) as e:
    fm.read_idx(path)
  assert _one_line(str(e.value)).startswith(f'{path}: not a valid gzip file, decompressing failed (zlib.error: ')


@contextlib.contextmanager
def _http_server(folder: pathlib.Path):
  """Serves ``folder`` on 127.0.0.1 from a thread; yields (url, list of the paths requested)."""
  requested = []

  class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name  # http.server's name
      requested.append(self.path)
      super().do_GET()

    def log_message(self, *args):  # pylint: disable=arguments-differ  # quiet
      pass

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=str(folder)))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}/', requested
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def offline_sources(monkeypatch, tmp_path):
  """Neither an explicit folder nor Debian's: find_source_dir goes to the download folder (returned)."""
  monkeypatch.delenv(fm.ENV_VAR, raising=False)
  monkeypatch.setattr(fm, 'DEBIAN_DIR', tmp_path / 'no-debian')
  monkeypatch.setattr(fm, 'DOWNLOAD_TIMEOUT_S', 10)
  dl = tmp_path / 'downloads'
  dl.mkdir()
  return dl


def test_a_corrupt_download_is_deleted_and_fetched_again(monkeypatch, offline_sources, fmnist_source_dir):
  dl = offline_sources
  _source_with_garbled(dl, fmnist_source_dir)  # an earlier download's files, one of them garbled since
  with _http_server(pathlib.Path(fmnist_source_dir)) as (url, requested):
    monkeypatch.setattr(fm, 'URL', url)
    assert fm.find_source_dir(download_dir=str(dl)) == dl
  assert requested == [f'/{SMALL}']
  assert (dl / SMALL).read_bytes() == (pathlib.Path(fmnist_source_dir) / SMALL).read_bytes()
  assert sorted(p.name for p in dl.iterdir()) == sorted(FILES)  # no '.part' left


def test_a_download_corrupt_twice_is_one_line_and_leaves_no_copy(monkeypatch, offline_sources, fmnist_source_dir,
                                                                  tmp_path):
  dl = offline_sources
  served = _source_with_garbled(tmp_path / 'served', fmnist_source_dir)  # the server's copy is damaged
  for f in FILES:
    if f != SMALL:
      os.symlink(pathlib.Path(fmnist_source_dir) / f, dl / f)
  with _http_server(served) as (url, requested):
    monkeypatch.setattr(fm, 'URL', url)
    with pytest.raises(fm.ChecksumError) as e:
      fm.find_source_dir(download_dir=str(dl))
  assert requested == [f'/{SMALL}'] * 2
  message = _one_line(str(e.value))
  assert message.startswith(f'{dl / SMALL}: not a valid gzip file')
  assert f'downloaded twice from {url}{SMALL}' in message and '--config.data.source_dir=DIR' in message
  assert not (dl / SMALL).exists()


# ------------------------------------------------------------------------------------------- grain workers


def _children(pid: int) -> dict[int, str]:
  """Live (not zombie) processes whose parent is ``pid``: their command lines."""
  found = {}
  for entry in pathlib.Path('/proc').iterdir():
    if entry.name.isdigit():
      with contextlib.suppress(OSError):
        fields = (entry / 'stat').read_text().rsplit(')', 1)[1].split()
        if int(fields[1]) == pid and fields[0] != 'Z':
          found[int(entry.name)] = (entry / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
  return found


def _alive(pid: int) -> bool:
  """A process that exited and waits to be reaped (a zombie) is not alive."""
  try:
    return (pathlib.Path('/proc') / str(pid) / 'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def test_grain_workers_exit_when_the_training_process_is_killed(tmp_path, generated_tfds_dir):
  cmd = [sys.executable, '-m', 'jaxssl.main', '--config', 'configs/fmnist_supervised.py', '--workdir',
         str(tmp_path / 'run'), f'--config.data.data_dir={generated_tfds_dir}', '--config.data.num_workers=2',
         '--config.total_steps=100000', '--config.batch_size=32', '--config.eval_every=0',
         '--config.checkpoint_every=100000', '--config.model.conv_impl=im2col']
  proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},  # pylint: disable=consider-using-with
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  workers = {}
  try:
    deadline = time.monotonic() + 240
    while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
      time.sleep(0.5)
      workers = {p: c for p, c in _children(proc.pid).items() if 'spawn_main' in c}
    assert len(workers) == 2, f'no two grain workers (exit code {proc.poll()}): {proc.stderr.read1(4000)}'
    time.sleep(2)
    assert all(_alive(p) for p in workers)  # they live while their parent does
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
      time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], 'grain workers outlived the training process'
  finally:
    for pid in [p for p in workers if _alive(p)]:
      os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    proc.stderr.close()


# ------------------------------------------------------------------------------------------ bad config values


def _config(**changes):
  c = fmnist_supervised.get_config()
  c.update_from_flattened_dict(changes)
  return c


@pytest.mark.parametrize('changes, message', [
    ({'total_steps': -5}, '--config.total_steps=-5 must be >= 0 (0 = from num_epochs)'),
    ({'num_epochs': -1.0}, '--config.num_epochs=-1.0 must be >= 0'),
    ({'eval_every': -1}, '--config.eval_every=-1 must be >= 0 (0 = only at the end)'),
    ({'checkpoint_every': -2}, '--config.checkpoint_every=-2 must be positive'),
    ({'eval_step': -3}, '--config.eval_step=-3 must be a step >= 0, or -1 for the latest checkpoint'),
    ({'data.train_limit': -1}, '--config.data.train_limit=-1 must be >= 0'),
    ({'data.num_workers': -2}, '--config.data.num_workers=-2 must be >= 0'),
    ({'data.train_fraction': 0.0}, '--config.data.train_fraction=0.0 must be in (0, 1]'),
    ({'data.eval_split': 'validation'},
     "dataset 'fashion_mnist' has no split 'validation'; it has: train, test (set --config.data.eval_split)"),
    ({'data.train_split': 'tran'}, "dataset 'fashion_mnist' has no split 'tran'"),
    ({'data.name': 'deepfashion_attr', 'data.eval_split': 'testing'},
     "dataset 'deepfashion_attr' has no split 'testing'; it has: train, val, test"),
    ({'data.pad_to': 20}, '--config.data.pad_to=20: Fashion-MNIST images are 28x28 and can only be padded; give a '
                          'size of at least 28'),   # was a traceback from deep in the run
    ({'data.image_size': 32}, '--config.data.image_size=32: Fashion-MNIST images are 28x28 and are not resized; '
                              '--config.data.pad_to=32 zero-pads them to 32x32, leave data.image_size at 0'),
    ({'data.image_size': 16}, '--config.data.image_size=16: Fashion-MNIST images are 28x28 and are not resized; '
                              'leave data.image_size at 0'),   # both trained at 28x28 without a word
])
def test_bad_values_are_one_line_before_anything_is_built(changes, message):
  with pytest.raises(ValueError) as e:
    check_config(_config(**changes))
  assert message in _one_line(str(e.value))


@pytest.mark.parametrize('options, message', [
    ({'kind': 'rotation', 'angles': [0, 45]}, "task 't': angles must be multiples of 90 degrees, got (0, 45)"),
    ({'kind': 'rotation', 'angles': 90}, "task 't' (Rotation): angles=90 (takes a tuple)"),   # its field's type
    ({'kind': 'classify', 'pool': 'max'}, "task 't': unknown pool 'max'; choose one of: flatten, avg"),
    ({'kind': 'multitask', 'pos_weight': 'half'}, "task 't': unknown pos_weight 'half'"),
    ({'kind': 'jigsaw', 'grid': 1}, "task 't': grid must be at least 2, got 1"),
    ({'kind': 'jigsaw_coords', 'gap': -1}, "task 't': tile_size=0 and gap=-1 must not be negative"),
    ({'kind': 'jigsaw', 'num_permutations': 0}, "task 't' (JigsawPermutation): cannot choose 0 of"),
    ({'kind': 'rotation', 'weight': -1.0}, "task 't': weight=-1.0 must be a number >= 0"),
])
def test_bad_task_options_are_one_line_before_anything_is_built(options, message):
  config = _config()
  config.tasks = ml_collections.ConfigDict({'t': options})
  with pytest.raises(ValueError) as e:
    check_config(config)
  assert message in _one_line(str(e.value))


def test_a_split_the_dataset_files_lack_is_an_error_the_command_reports_in_one_line():
  info = datasets.DatasetInfo('image_csv', (8, 8, 3), (), (0.0,), (1.0,), ('train', 'test'),
                              lambda split, cfg: pytest.fail('loaded a split that is not there'))
  with pytest.raises(AnnotationError) as e:  # jaxssl.main prints it as 'error: ...' and exits 2
    datasets.load_split(info, 'val', ml_collections.ConfigDict())
  assert isinstance(e.value, datasets.MissingSplitError)
  assert _one_line(str(e.value)).startswith("dataset 'image_csv' has no split 'val'; it has: train, test")


def test_a_data_dir_that_cannot_hold_prepared_data_names_its_setting(generated_fmnist, monkeypatch, tmp_path):
  """A file where the prepared data would go: one line naming the data folder's setting (the config's data_dir,
  else $TFDS_DATA_DIR), not the workdir's; what was there is left as it was."""
  from conftest import checked_as_official  # pylint: disable=import-outside-toplevel
  from jaxssl.runlog import WriteError  # pylint: disable=import-outside-toplevel
  blocker = tmp_path / 'afile'
  blocker.write_text('mine')
  cfg = ml_collections.ConfigDict({'data_dir': str(blocker), 'source_dir': str(generated_fmnist.folder)})
  info = datasets.get_dataset('fashion_mnist', cfg)
  with checked_as_official(generated_fmnist):
    with pytest.raises(WriteError) as e:
      datasets.load_split(info, 'test', cfg)
    assert _one_line(str(e.value)) == (
        f'{blocker}: Not a directory (ENOTDIR); datasets are prepared under --config.data.data_dir={blocker}: a '
        'file stands where a folder is needed: move it away, or point --config.data.data_dir (or $TFDS_DATA_DIR) '
        'at another folder')
    monkeypatch.setenv('TFDS_DATA_DIR', str(blocker / 'sub'))
    with pytest.raises(WriteError, match=rf'^{blocker}: Not a directory .*prepared under \$TFDS_DATA_DIR='
                                         rf'{blocker}/sub: a file stands') as e:
      datasets.load_split(info, 'test', ml_collections.ConfigDict({'source_dir': str(generated_fmnist.folder)}))
  assert '--workdir' not in str(e.value) and blocker.read_text() == 'mine'


def test_the_command_refuses_a_negative_step_count_before_writing_anything(tmp_path):
  done = subprocess.run([sys.executable, '-m', 'jaxssl.main', '--config', 'configs/fmnist_supervised.py',
                         '--workdir', str(tmp_path / 'run'), '--config.total_steps=-5'],
                        cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      'error: bad config: --config.total_steps=-5 must be >= 0 (0 = from num_epochs)')
  assert not (tmp_path / 'run').exists()


# ------------------------------------------------------------------------------------------- oneDNN cache

ONEDNN_REASON = None
try:
  onednn._toolchain()  # pylint: disable=protected-access
except (RuntimeError, OSError) as _e:
  ONEDNN_REASON = str(_e)
needs_toolchain = pytest.mark.skipif(ONEDNN_REASON is not None, reason=f'cannot build oneDNN here: {ONEDNN_REASON}')


def _sha(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(monkeypatch, tmp_path) -> pathlib.Path:
  """A private, empty JAXSSL_CACHE_DIR for one test."""
  d = tmp_path / 'cache'
  monkeypatch.setenv('JAXSSL_CACHE_DIR', str(d))
  return d


@pytest.fixture(scope='module')
def good_library(tmp_path_factory) -> pathlib.Path:
  """An intact library, copied by the tests that damage one: the session's (tests/conftest.py seeds its cache from
  the user's; built there if not), copied into a folder of this module's own."""
  lib = onednn._build()  # pylint: disable=protected-access  # the session's cache: an intact one is not rebuilt
  _assert_intact(lib)
  own = tmp_path_factory.mktemp('built')
  for f in (lib, lib.with_name(lib.name + '.sha256')):
    shutil.copy2(f, own / f.name)
  return own / lib.name


def _assert_intact(path: pathlib.Path):
  assert path.read_bytes()[:4] == b'\x7fELF'
  assert (path.parent / (path.name + '.sha256')).read_text().strip() == _sha(path)


@needs_toolchain
def test_a_library_planted_in_the_cache_is_rebuilt_not_loaded(cache):
  target = onednn.library_path()
  planted = pathlib.Path(sys.modules['_ctypes'].__file__)  # a real shared library, but not jaxssl's
  shutil.copyfile(planted, target)
  (cache / (target.name + '.sha256')).write_text(_sha(REPO / 'README.md') + '\n')  # a record of something else
  assert onednn._build() == target  # pylint: disable=protected-access  # what every load goes through
  _assert_intact(target)
  assert target.read_bytes() != planted.read_bytes()


@needs_toolchain
def test_a_truncated_library_is_rebuilt(cache, good_library):
  cache.mkdir(mode=0o700)
  target = onednn.library_path()
  assert target.name == good_library.name
  for name in (target.name, target.name + '.sha256'):
    shutil.copyfile(good_library.parent / name, cache / name)
  with open(target, 'r+b') as f:
    f.truncate(target.stat().st_size // 2)  # what a full disk or a killed copy leaves: it crashed every run
  assert onednn._build() == target  # pylint: disable=protected-access
  _assert_intact(target)
  assert target.stat().st_size == good_library.stat().st_size


@needs_toolchain
def test_a_library_that_fails_to_load_is_rebuilt(cache):
  target = onednn.library_path()
  target.write_bytes(b'not a shared library')
  (cache / (target.name + '.sha256')).write_text(_sha(target))  # its record matches: only loading it fails
  lib = onednn._library.__wrapped__()  # pylint: disable=protected-access  # the loader itself, uncached
  assert hasattr(lib, 'JaxsslOnednnConvForward')
  _assert_intact(target)


@needs_toolchain
def test_a_cache_other_users_can_write_to_is_refused(cache):
  cache.mkdir()
  cache.chmod(0o777)
  with pytest.raises(RuntimeError) as e:
    onednn.library_path()
  message = _one_line(str(e.value))
  assert message.startswith(f'refusing the oneDNN library cache {cache}: its mode 777 lets other users write to it')
  assert f'chmod go-w {cache}' in message and 'set JAXSSL_CACHE_DIR' in message
  assert not list(cache.iterdir())  # nothing built there
  # A run falls back to its own convolutions and logs why (jaxssl.ops.describe_path, one line).
  probe = ('from jaxssl import ops; from jaxssl.ops import onednn; '
           'print(onednn.unavailable_reason()); print(ops.describe_path("auto"))')
  done = subprocess.run([sys.executable, '-c', probe], cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  reason, path = done.stdout.strip().splitlines()
  assert reason == message
  assert path == f'convolutions: gathered-window matmuls (conv_impl=auto); oneDNN unavailable: {message}'
  if os.getuid() == 0:  # root can hand the directory to another user: refused for its owner too
    cache.chmod(0o755)
    os.chown(cache, 65534, 65534)
    with pytest.raises(RuntimeError, match=f'{cache}: it is owned by uid 65534, not by you'):
      onednn.library_path()


def test_a_cache_folder_linked_by_its_user_is_followed_and_its_target_checked(tmp_path):
  """A user's own symbolic link to a private folder (a cache moved to a bigger disk) is that folder: accepted; one
  to a folder others can write to is refused, as that folder would be (the link's own mode, 777, says nothing)."""
  target = tmp_path / 'disk' / 'jaxssl'
  target.mkdir(parents=True, mode=0o700)
  link = tmp_path / 'cache'
  link.symlink_to(target)
  assert onednn.private_dir(link, 'the test cache', 'a library') == link
  target.chmod(0o777)
  with pytest.raises(RuntimeError, match=r'its mode 777 lets other users write to it'):
    onednn.private_dir(link, 'the test cache', 'a library')
