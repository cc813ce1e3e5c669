"""jaxssl.files, the path layer every workdir read and write goes through: local paths keep os's behaviour and are
replaced whole; a gs:// workdir is a bucket, not a local folder named 'gs:'.

GCS itself is not reached from a test. A whole run on ``gs://bucket/run`` goes through epath's real gs:// code path
(its fsspec backend, as without TensorFlow) onto a stand-in for gcsfs that keeps the bucket in a temporary folder;
orbax's arrays go through tensorstore's file driver in the same folder (orbax's one hook that builds the gcs
kvstore spec is pointed there), and orbax's bucket-layout question (hierarchical namespace) is answered 'no'.
"""

import importlib
import io
import json
import os
import sys
import tempfile
import time
import types

import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem
from orbax.checkpoint._src.path import gcs_utils

from conftest import small_config
from jaxssl import cli, files, modes, report, runlog
from jaxssl.eval import plots
from jaxssl.train import lock, loop

plt = plots.plt  # matplotlib with the Agg backend

# The module (fsspec's package attribute of that name is its mapping of registered classes).
_FSSPEC_REGISTRY = importlib.import_module('fsspec.registry')

# ------------------------------------------------------------------------------------------------ local paths


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / 'final_metrics.json'
  files.write_text(path, '{"step": 8}')
  with pytest.raises(TypeError):  # fails while writing the temporary file
    files.write_bytes(path, object())
  assert path.read_text(encoding='utf-8') == '{"step": 8}' and os.listdir(tmp_path) == ['final_metrics.json']

  def full(*_):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(os, 'replace', full)  # fails at the rename into place
  with pytest.raises(OSError, match='No space'):
    files.write_text(path, '{"step": 16}')
  assert path.read_text(encoding='utf-8') == '{"step": 8}' and os.listdir(tmp_path) == ['final_metrics.json']


def test_listing_renaming_and_removing_local_files(tmp_path):
  run = tmp_path / 'run'
  files.makedirs(run / 'checkpoints' / '4')
  files.makedirs(run / 'checkpoints' / '4')  # exists already: nothing to do
  files.write_text(run / 'knn_test.json', '{}')
  files.append_text(run / 'metrics.jsonl', '{"step": 1}\n')
  files.append_text(run / 'metrics.jsonl', '{"step": 2}\n')
  assert files.read_text(run / 'metrics.jsonl') == '{"step": 1}\n{"step": 2}\n'
  assert sorted(files.listdir(run)) == ['checkpoints', 'knn_test.json', 'metrics.jsonl']
  assert files.exists(run / 'knn_test.json') and files.isfile(run / 'knn_test.json') and files.isdir(run)
  assert not files.isfile(run / 'checkpoints') and not files.exists(run / 'nothing')
  assert files.glob(run, 'knn_*.json') == [str(run / 'knn_test.json')] and files.glob(run / 'nothing', '*') == []
  root, dirs, names = next(files.walk(str(run)))
  assert (root, dirs, sorted(names)) == (str(run), ['checkpoints'], ['knn_test.json', 'metrics.jsonl'])
  files.rename(run / 'checkpoints' / '4', run / 'checkpoints' / '4.corrupt-now')
  assert files.listdir(run / 'checkpoints') == ['4.corrupt-now']
  files.remove(run / 'knn_test.json')
  assert not files.exists(run / 'knn_test.json')
  with pytest.raises(FileNotFoundError):
    files.listdir(run / 'nothing')
  assert files.create_new(run / 'lock.json', b'mine') and not files.create_new(run / 'lock.json', b'theirs')
  assert files.read_bytes(run / 'lock.json') == b'mine'
  assert abs(files.mtime(run / 'lock.json') - os.stat(run / 'lock.json').st_mtime) < 1e-6


def test_figures_and_arrays_are_written_whole_to_any_path(tmp_path):
  fig, ax = plt.subplots()
  ax.plot([0, 1], [1, 0])
  assert files.save_figure(fig, tmp_path / 'curves.png', dpi=50) == str(tmp_path / 'curves.png')
  files.save_figure(fig, tmp_path / 'curves.svg')
  plt.close(fig)
  assert (tmp_path / 'curves.png').read_bytes().startswith(b'\x89PNG')
  assert b'<svg' in (tmp_path / 'curves.svg').read_bytes()
  assert files.save_array(tmp_path / 'perms', np.arange(6).reshape(2, 3)) == str(tmp_path / 'perms.npy')
  np.testing.assert_array_equal(np.load(tmp_path / 'perms.npy'), np.arange(6).reshape(2, 3))
  assert sorted(os.listdir(tmp_path)) == ['curves.png', 'curves.svg', 'perms.npy']


def test_names_of_local_paths_and_urls(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert files.abspath('run') == str(tmp_path / 'run') and files.abspath('gs://bucket/run/') == 'gs://bucket/run'
  assert files.abspath('gs://') == 'gs://'
  assert files.is_remote('gs://bucket/run') and files.is_remote('S3://x') and not files.is_remote('gs:/bucket')
  assert files.scheme('gs://b') == 'gs' and files.scheme('/tmp/run') == ''
  with pytest.raises(files.RemotePathError, match='not GS://'):  # epath would take it for a local folder 'GS:'
    files.makedirs('GS://bucket/run')
  assert files.join('gs://bucket/run', 'checkpoints', '4') == 'gs://bucket/run/checkpoints/4'
  assert files.basename('gs://bucket/run/') == 'run' and files.dirname('gs://bucket/run') == 'gs://bucket'
  assert files.is_within('gs://bucket/run/metrics.jsonl', 'gs://bucket/run')
  assert not files.is_within('gs://bucket/run2/x', 'gs://bucket/run') and not files.is_within('run/x', 'gs://b/run')
  assert files.is_within('run/x', str(tmp_path)) and files.is_within(str(tmp_path), 'run/..')
  assert files.commonpath(['gs://bucket/a/run1', 'gs://bucket/a/run2']) == 'gs://bucket/a'
  assert files.commonpath(['run1', 'run2']) == str(tmp_path)
  with pytest.raises(ValueError):
    files.commonpath(['gs://bucket/a', 'run'])


# ------------------------------------------------------------------------------------------------ gs://


def test_a_gs_path_without_its_client_is_one_line_and_writes_nothing(generated_tfds_dir, tmp_path, monkeypatch,
                                                                     capsys):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setitem(sys.modules, 'gcsfs', None)  # `import gcsfs` fails, installed or not
  monkeypatch.setitem(sys.modules, 'google.cloud.storage', types.ModuleType('google.cloud.storage'))  # present
  with pytest.raises(files.RemotePathError) as e:
    files.write_text('gs://bucket/run/config.json', '{}')
  assert str(e.value) == ("gs://bucket/run/config.json: gs:// paths need gcsfs and google-cloud-storage, and gcsfs "
                          "cannot be imported; install them with pip install -e '.[gcs]'")
  # A command says it in one line, exit code 2, before anything is built or written.
  with pytest.raises(SystemExit) as stop, cli.errors_as_one_line():
    loop.train_and_evaluate(small_config(generated_tfds_dir), 'gs://bucket/run')
  assert stop.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: gs://bucket/run: gs:// paths need gcsfs and google-cloud-storage, and gcsfs cannot be "
                 "imported; install them with pip install -e '.[gcs]'"]
  with pytest.raises(files.RemotePathError, match=r'^s3://bucket/run: jaxssl reads and writes local paths and gs:// '
                                                  r'only, not s3://$'):
    files.makedirs('s3://bucket/run')
  assert not os.listdir(tmp_path)  # no local folder named gs: or s3:


class _Upload(io.BytesIO):
  """An object being uploaded: as on GCS, readers see the previous version until it is complete (written into
  ``spool`` beside the buckets, then renamed over the object on close)."""

  def __init__(self, target: str, spool: str):
    super().__init__()
    self.target, self.spool = target, spool

  def close(self):
    if not self.closed:
      os.makedirs(self.spool, exist_ok=True)
      fd, temp = tempfile.mkstemp(dir=self.spool)
      with os.fdopen(fd, 'wb') as f:
        f.write(self.getvalue())
      os.replace(temp, self.target)
    super().close()


class _BucketsOnDisk(LocalFileSystem):  # pylint: disable=abstract-method  # as LocalFileSystem (_rm, sign)
  """A stand-in for gcsfs: gs://<bucket>/<key> is <root>/<bucket>/<key>. As on GCS, a write needs no folder made
  first, an overwritten object is replaced whole when its upload completes (a lock's heartbeat never shows a reader
  an empty file), and ``pipe_file(mode='create')`` fails with FileExistsError where an object is (gcsfs: HTTP
  412)."""
  protocol = ('gs', 'gcs')
  root = ''
  cachable = False

  def __init__(self, *args, **kwargs):  # pylint: disable=unused-argument  # gcsfs's options
    super().__init__(auto_mkdir=True)

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    for prefix in ('gs://', 'gcs://'):
      if path.startswith(prefix):
        return os.path.join(cls.root, path[len(prefix):]).rstrip('/')
    return super()._strip_protocol(path)

  def glob(self, path, maxdepth=None, **kwargs):
    """Matches as gcsfs names them, '<bucket>/<key>' (epath puts 'gs://' before each)."""
    return [os.path.relpath(p, self.root) for p in super().glob(path, maxdepth=maxdepth, **kwargs)]

  def _open(self, path, mode='rb', block_size=None, **kwargs):
    if 'w' not in mode:
      return super()._open(path, mode, block_size=block_size, **kwargs)
    local = self._strip_protocol(path)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    return _Upload(local, os.path.join(os.path.dirname(self.root), 'uploads'))

  def pipe_file(self, path, value, mode='overwrite', **kwargs):
    if mode != 'create':
      super().pipe_file(path, value, **kwargs)
      return
    local = self._strip_protocol(path)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open(local, 'xb') as f:
      f.write(value)


@pytest.fixture
def bucket_on_disk(tmp_path, monkeypatch):
  """gs:// onto tmp_path/buckets for the duration of a test; returns that folder. The working directory is an empty
  folder, so that a path taken for a local one would show there."""
  root = tmp_path / 'buckets'
  root.mkdir()
  (tmp_path / 'cwd').mkdir()
  monkeypatch.chdir(tmp_path / 'cwd')
  monkeypatch.setattr(_BucketsOnDisk, 'root', str(root))
  real = _FSSPEC_REGISTRY.get_filesystem_class
  monkeypatch.setattr(_FSSPEC_REGISTRY, 'get_filesystem_class',
                      lambda protocol: _BucketsOnDisk if protocol in ('gs', 'gcs') else real(protocol))
  for module in ('gcsfs', 'google.cloud.storage'):  # what files.check_remote imports
    monkeypatch.setitem(sys.modules, module, types.ModuleType(module))

  def kvstore(path):  # orbax's tensorstore spec for a gs:// path: the file driver in the bucket's folder
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {'driver': 'file', 'path': os.path.join(str(root), bucket, key)}
  monkeypatch.setattr(gcs_utils, 'get_kvstore_for_gcs', kvstore)
  monkeypatch.setattr(gcs_utils, 'is_hierarchical_namespace_enabled', lambda path: False)
  yield root
  assert not os.listdir(tmp_path / 'cwd'), 'a gs:// path was written as a local one'


def test_the_layer_on_a_bucket(bucket_on_disk):
  run = 'gs://bucket/run'
  files.makedirs(run)
  assert not files.exists(run)  # a store has no folders: only objects, and the prefixes they make
  files.write_text(f'{run}/config.json', '{}')
  files.append_text(f'{run}/metrics.jsonl', 'a\n')
  files.append_text(f'{run}/metrics.jsonl', 'b\n')
  assert (bucket_on_disk / 'bucket' / 'run' / 'metrics.jsonl').read_text() == 'a\nb\n'
  assert files.isdir(run) and files.isfile(f'{run}/config.json') and not files.isdir(f'{run}/config.json')
  assert sorted(files.listdir(run)) == ['config.json', 'metrics.jsonl']
  assert files.glob(run, '*.json') == [f'{run}/config.json']
  assert list(files.walk('gs://bucket')) == [('gs://bucket', ['run'], []),
                                             (f'{run}', [], ['config.json', 'metrics.jsonl'])]
  assert files.create_new(f'{run}/lock.json', b'mine') and not files.create_new(f'{run}/lock.json', b'theirs')
  assert files.create_new(f'{run}/lock.json', b'mine')  # an upload retried after a lost reply: it is ours
  assert files.mtime(f'{run}/lock.json') > 0
  files.rename(f'{run}/config.json', f'{run}/config.old.json')
  files.remove(f'{run}/config.old.json')
  assert sorted(files.listdir(run)) == ['lock.json', 'metrics.jsonl']
  fig, ax = plt.subplots()
  ax.plot([0, 1])
  files.save_figure(fig, f'{run}/curves.png')
  plt.close(fig)
  files.save_array(f'{run}/artifacts/jigsaw/permutations', np.eye(3))
  assert (bucket_on_disk / 'bucket' / 'run' / 'curves.png').read_bytes().startswith(b'\x89PNG')
  np.testing.assert_array_equal(np.load(bucket_on_disk / 'bucket/run/artifacts/jigsaw/permutations.npy'), np.eye(3))


def test_the_lock_on_a_bucket_is_exclusive(bucket_on_disk):
  first = lock.WorkdirLock('gs://bucket/run', heartbeat_s=0.05)
  first.acquire()
  try:
    held = bucket_on_disk / 'bucket' / 'run' / lock.LOCK_FILE
    assert first.holds() and held.exists()
    beat = held.stat().st_mtime_ns
    time.sleep(0.5)
    assert held.stat().st_mtime_ns > beat and first.holds()  # the heartbeat uploads it anew, unchanged
    with pytest.raises(lock.LockError, match=r'^gs://bucket/run is in use by another training run'):
      lock.WorkdirLock('gs://bucket/run').acquire()
  finally:
    first.release()
  assert not (bucket_on_disk / 'bucket' / 'run' / lock.LOCK_FILE).exists()


def test_a_whole_run_on_a_bucket_writes_there(generated_tfds_dir, bucket_on_disk):
  """Training, resuming, --mode=eval and a report on gs://bucket/run: every file lands in the bucket."""
  config = small_config(generated_tfds_dir, total_steps=8, eval_every=4, checkpoint_every=4)
  run = 'gs://bucket/run'
  first = loop.train_and_evaluate(config, run, stop_after=4)
  assert not first['finished'] and first['step'] == 4
  summary = loop.train_and_evaluate(config, run)  # resumes from the bucket's checkpoint of step 4
  assert summary['finished'] and summary['step'] == 8
  where = bucket_on_disk / 'bucket' / 'run'
  names = set(os.listdir(where))
  assert {'config.json', 'metrics.jsonl', 'final_metrics.json', 'curves.png', 'filters.png', 'tensorboard',
          'checkpoints'} <= names and lock.LOCK_FILE not in names, names
  assert json.loads((where / 'final_metrics.json').read_text())['step'] == 8
  assert sorted(d for d in os.listdir(where / 'checkpoints') if d.isdigit()) == ['4', '8']
  # orbax took its GCS path (a commit file, not a rename) and tensorstore wrote the arrays into the bucket.
  assert (where / 'checkpoints' / '8' / 'commit_success.txt').exists()
  assert list((where / 'checkpoints' / '8' / 'state').glob('**/d/*'))
  assert [r['step'] for r in runlog.read_metrics(run) if r['split'] == 'train'] == list(range(1, 9))
  events = os.listdir(where / 'tensorboard')
  assert len(events) == 2 and all(e.startswith('events.out.tfevents.') for e in events)  # one per process run
  assert all((where / 'tensorboard' / e).stat().st_size > 100 for e in events)

  result = modes.evaluate_checkpoint(small_config(generated_tfds_dir, mode='eval', total_steps=8), run)
  assert {k: v for k, v in result.items() if k not in ('step', 'split')} == summary['eval']
  assert (where / 'eval_test_step8.json').exists()

  out = report.report([run])
  assert out['out'] == 'gs://bucket' and [r['status'] for r in out['rows']] == ['finished']
  assert {'summary.md', 'summary.csv', 'summary.png'} <= set(os.listdir(bucket_on_disk / 'bucket'))
  assert '[curves](run/curves.png)' in (bucket_on_disk / 'bucket' / 'summary.md').read_text()
