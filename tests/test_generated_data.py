"""The no-real-data tier end to end: jaxssl's own Fashion-MNIST preparation, then training, stop and resume from
the command line, on generated files in the official format (tests/conftest.py writes them; the real files are
the real_data tier's)."""

import functools
import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, checked_as_official, small_config
from jaxssl.data import fashion_mnist as fm
from jaxssl.train import loop

# 8 steps of 32 of the 1,024 generated training images, checkpoints every 3 steps, evaluated on all 256 test ones.
OVERRIDES = {'data.train_limit': 0, 'data.eval_limit': 0, 'batch_size': 32, 'total_steps': 8, 'eval_every': 0,
             'checkpoint_every': 3}
# The fields small_config and OVERRIDES set, which the command line must set alike.
SET_FIELDS = ('data.train_limit', 'data.eval_limit', 'batch_size', 'eval_batch_size', 'total_steps', 'log_every',
              'eval_every', 'checkpoint_every', 'optim.warmup_epochs')


def _rows(workdir):
  """The last metrics row logged for each (step, split): a stopped run's rows after its checkpoint are rewritten
  when it resumes. Throughput is the one figure that may differ."""
  rows = {}
  with open(f'{workdir}/metrics.jsonl', encoding='utf-8') as f:
    for line in f:
      r = json.loads(line)
      rows[(r['step'], r['split'])] = {k: v for k, v in r.items() if k != 'images_per_s'}
  return rows


def test_generated_files_are_prepared_in_file_order(generated_fmnist, generated_tfds_dir):
  for split, (images, labels) in generated_fmnist.arrays.items():
    src = fm.data_source(split, data_dir=generated_tfds_dir)
    assert len(src) == len(labels) == generated_fmnist.splits[split]
    records = src.__getitems__(list(range(len(labels))))
    np.testing.assert_array_equal(np.stack([r['image'] for r in records]), images[..., None])
    assert [r['label'] for r in records] == labels.tolist()
    assert [r['index'] for r in records] == list(range(len(labels)))


def test_generated_files_are_checked_like_the_official_ones(generated_fmnist, tmp_path):
  """Outside checked_as_official the official checksums reject them; inside, a changed byte is still caught."""
  for name in generated_fmnist.files:
    shutil.copy(generated_fmnist.folder / f'{name}.gz', tmp_path)
  with pytest.raises(fm.ChecksumError, match='wrong content'):
    fm.find_source_dir(str(tmp_path))
  bad = tmp_path / 'train-labels-idx1-ubyte.gz'
  data = bytearray(gzip.decompress(bad.read_bytes()))
  data[-1] = (data[-1] + 1) % 10  # still a well-formed IDX file
  bad.write_bytes(gzip.compress(bytes(data)))
  with checked_as_official(generated_fmnist):
    with pytest.raises(fm.ChecksumError, match=bad.name):
      fm.find_source_dir(str(tmp_path))


@pytest.fixture(scope='module')
def reference(generated_tfds_dir, tmp_path_factory):
  """One uninterrupted run that the stopped and resumed one must reproduce."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  return workdir, loop.train_and_evaluate(small_config(generated_tfds_dir, **OVERRIDES), workdir)


def test_training_on_generated_data_learns(reference):
  workdir, summary = reference
  assert summary['finished'] and summary['step'] == 8
  train = [r for r in _rows(workdir).values() if r['split'] == 'train']
  assert [r['step'] for r in train] == list(range(1, 9))
  assert np.mean([r['loss'] for r in train[-3:]]) < np.mean([r['loss'] for r in train[:3]])
  assert summary['eval']['classify/top1'] > 0.3  # chance: 0.1


def test_stopped_run_resumed_from_the_command_line_ends_as_the_uninterrupted_one(reference, generated_tfds_dir,
                                                                                 tmp_path):
  """Stopped after 4 steps (checkpointed at 3, as a preemption would), then ``python -m jaxssl.main`` with the
  same workdir: the final metrics and every logged row equal the uninterrupted run's."""
  ref_dir, ref = reference
  config = small_config(generated_tfds_dir, **OVERRIDES)
  first = loop.train_and_evaluate(config, str(tmp_path), stop_after=4)
  assert not first['finished'] and first['step'] == 4
  overrides = [f'--config.{k}={functools.reduce(getattr, k.split("."), config)}' for k in SET_FIELDS]
  done = subprocess.run([sys.executable, '-m', 'jaxssl.main', '--config', str(REPO / 'configs/fmnist_supervised.py'),
                         '--workdir', str(tmp_path), f'--config.data.data_dir={generated_tfds_dir}', *overrides],
                        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  assert 'resumed from' in done.stdout
  with open(tmp_path / 'final_metrics.json', encoding='utf-8') as f:
    final = json.load(f)
  assert {k: v for k, v in final.items() if k not in ('step', 'split')} == ref['eval']
  assert _rows(tmp_path) == _rows(ref_dir)
