"""The trainer end to end on real Fashion-MNIST: exact resume, eval mode, devices, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, small_config
from jaxssl import modes
from jaxssl.train import loop
from jaxssl.runlog import read_metrics


def _last_rows(workdir):
  """The last row logged for each (step, split): a killed run's extra rows are replaced after resume."""
  rows = {}
  for r in read_metrics(workdir):
    rows[(r['step'], r['split'])] = {k: v for k, v in r.items() if k != 'images_per_s'}
  return rows


@pytest.fixture(scope='module')
def reference(tfds_dir, tmp_path_factory):
  """One uninterrupted run that every interrupted run must reproduce."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  summary = loop.train_and_evaluate(small_config(tfds_dir), workdir)
  return workdir, summary


def test_uninterrupted_run_learns_and_leaves_its_files(reference):
  workdir, summary = reference
  assert summary['finished'] and summary['step'] == 16
  for name in ('config.json', 'metrics.jsonl', 'final_metrics.json', 'curves.png', 'filters.png'):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  rows = read_metrics(workdir)
  train = [r for r in rows if r['split'] == 'train']
  assert [r['step'] for r in train] == list(range(1, 17))
  # 16 steps of SGD on real images: the loss falls and test accuracy is far above chance (10%).
  assert np.mean([r['loss'] for r in train[-4:]]) < np.mean([r['loss'] for r in train[:4]])
  assert summary['eval']['classify/top1'] > 0.4
  assert summary['eval']['classify/top1'] <= summary['eval']['classify/top3'] <= summary['eval']['classify/top5']


def test_resume_after_stop_equals_uninterrupted(reference, tfds_dir, tmp_path):
  ref_dir, ref = reference
  config = small_config(tfds_dir)
  first = loop.train_and_evaluate(config, str(tmp_path), stop_after=6)  # between checkpoints (every 4)
  assert not first['finished'] and first['step'] == 6
  second = loop.train_and_evaluate(config, str(tmp_path))
  assert second['finished']
  assert second['eval'] == ref['eval']
  assert _last_rows(str(tmp_path)) == _last_rows(ref_dir)


def test_eval_mode_reproduces_final_metrics(reference, tfds_dir):
  workdir, summary = reference
  config = small_config(tfds_dir, mode='eval')
  result = modes.evaluate_checkpoint(config, workdir)
  assert result['step'] == 16
  assert {k: v for k, v in result.items() if k not in ('step', 'split')} == summary['eval']
  # An earlier checkpoint gives a different (earlier) model.
  config.eval_step = 8
  assert modes.evaluate_checkpoint(config, workdir)['step'] == 8


def _main_cmd(tfds_dir, workdir, *extra):
  return [sys.executable, '-m', 'jaxssl.main', '--config', str(REPO / 'configs/fmnist_supervised.py'),
          '--workdir', str(workdir), f'--config.data.data_dir={tfds_dir}', '--config.data.train_limit=2048',
          '--config.data.eval_limit=300', '--config.batch_size=64', '--config.eval_batch_size=128',
          '--config.total_steps=16', '--config.log_every=1', '--config.eval_every=8',
          '--config.checkpoint_every=4', '--config.optim.warmup_epochs=0.0', *extra]


def _checkpoint_steps(workdir) -> list[int]:
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if os.path.isdir(ckpt_dir) else []


def _run_until_new_checkpoint_then(sig, tfds_dir, workdir):
  """Starts (or resumes) a training process, sends ``sig`` once it has finished a checkpoint newer than
  those already in ``workdir``, and returns its exit code and output."""
  before = max(_checkpoint_steps(workdir), default=0)
  # Not a with-block: the process is signalled mid-run and reaped by communicate(timeout=...), which fails the
  # test on a hang where Popen.__exit__ would wait forever.
  # pylint: disable-next=consider-using-with
  proc = subprocess.Popen(_main_cmd(tfds_dir, workdir), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if max(_checkpoint_steps(workdir), default=0) > before:
      proc.send_signal(sig)
      break
    time.sleep(0.01)
  out, _ = proc.communicate(timeout=240)
  return proc.returncode, out


def test_terminated_then_killed_process_resumes_to_the_same_metrics(reference, tfds_dir, tmp_path):
  """SIGTERM (a preemption notice: checkpoint and exit 143), rerun, kill -9 mid-run (no warning), rerun:
  the final metrics and every logged row equal the uninterrupted run's."""
  ref_dir, ref = reference
  code, out = _run_until_new_checkpoint_then(signal.SIGTERM, tfds_dir, tmp_path)
  assert code == loop.PREEMPTED_EXIT_CODE, out
  assert 'Rerun the same command to resume' in out
  code, out = _run_until_new_checkpoint_then(signal.SIGKILL, tfds_dir, tmp_path)
  assert code == -signal.SIGKILL, out
  assert 'resumed from' in out
  assert not os.path.exists(tmp_path / 'final_metrics.json'), 'the run should have been interrupted twice'
  done = subprocess.run(_main_cmd(tfds_dir, tmp_path), cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  assert 'resumed from' in done.stdout
  with open(tmp_path / 'final_metrics.json', encoding='utf-8') as f:
    final = json.load(f)
  assert {k: v for k, v in final.items() if k not in ('step', 'split')} == ref['eval']
  assert _last_rows(str(tmp_path)) == _last_rows(ref_dir)


def test_eight_devices_give_the_same_loss_as_one(tfds_dir, tmp_path):
  """The same config on 1 (this process) and on 8 (fake CPU) devices: the data-parallel step computes the
  same thing."""
  if jax.device_count() != 1:
    pytest.skip('the one-device reference runs in the test process, which sees several devices')
  overrides = {'total_steps': 3, 'eval_every': 0, 'data.eval_limit': 128}
  one = loop.train_and_evaluate(small_config(tfds_dir, **overrides), str(tmp_path / 'd1'))
  script = (
      'import json, sys; sys.path.insert(0, %r)\n'
      'from conftest import small_config\n'
      'from jaxssl.train import loop\n'
      'import jax\n'
      's = loop.train_and_evaluate(small_config(%r, **%r), sys.argv[1])\n'
      'print(json.dumps({"devices": jax.device_count(), "eval": s["eval"]}))\n') % (
          str(REPO / 'tests'), tfds_dir, overrides)
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', script, str(tmp_path / 'd8')], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  eight = json.loads(out.stdout.strip().splitlines()[-1])
  assert eight['devices'] == 8
  train1 = [r['loss'] for r in read_metrics(str(tmp_path / 'd1')) if r['split'] == 'train']
  train8 = [r['loss'] for r in read_metrics(str(tmp_path / 'd8')) if r['split'] == 'train']
  assert len(train1) == 3
  np.testing.assert_allclose(train8, train1, rtol=2e-5)
  np.testing.assert_allclose(eight['eval']['loss'], one['eval']['loss'], rtol=2e-5)
