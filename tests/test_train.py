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
  # An earlier checkpoint gives the earlier model: the one the run itself evaluated at step 8 (its logged row,
  # figure for figure), whose parameters differ from the final ones.
  config.eval_step = 8
  early = modes.evaluate_checkpoint(config, workdir)
  assert early['step'] == 8
  (logged,) = [r for r in read_metrics(workdir) if r['step'] == 8 and r['split'] == config.data.eval_split]
  logged = {k: v for k, v in logged.items() if k not in ('step', 'split')}
  assert logged and {k: early[k] for k in logged} == logged
  _, state8, origin = modes.restore_for_mode(config, workdir, 'eval')
  config.eval_step = 16
  _, state16, _ = modes.restore_for_mode(config, workdir, 'eval')
  assert origin['checkpoint'].endswith(os.path.join('checkpoints', '8')) and int(state8.step) == 8
  params8, params16 = (jax.tree.leaves(jax.device_get(s.params)) for s in (state8, state16))
  assert all(not np.array_equal(a, b) for a, b in zip(params8, params16))   # every parameter moved since


def _main_args(tfds_dir, workdir, *extra):
  return ['--config', str(REPO / 'configs/fmnist_supervised.py'),
          '--workdir', str(workdir), f'--config.data.data_dir={tfds_dir}', '--config.data.train_limit=2048',
          '--config.data.eval_limit=300', '--config.batch_size=64', '--config.eval_batch_size=128',
          '--config.total_steps=16', '--config.log_every=1', '--config.eval_every=8',
          '--config.checkpoint_every=4', '--config.optim.warmup_epochs=0.0', *extra]


def _main_cmd(tfds_dir, workdir, *extra):
  return [sys.executable, '-m', 'jaxssl.main', *_main_args(tfds_dir, workdir, *extra)]


def _run_held_then(sig, tfds_dir, workdir, hold_dir):
  """Starts (or resumes) a training process held still right after it saved a checkpoint newer than those in
  ``workdir`` (tests/held_run.py: it cannot finish before the signal, however loaded the machine), sends it
  ``sig``, and returns its exit code and output."""
  hold_dir.mkdir()
  # Not a with-block: the process is signalled mid-run and reaped by communicate(timeout=...), which fails the
  # test on a hang where Popen.__exit__ would wait forever.
  # pylint: disable-next=consider-using-with
  proc = subprocess.Popen([sys.executable, str(REPO / 'tests' / 'held_run.py'), str(hold_dir),
                           *_main_args(tfds_dir, workdir)], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 240
  while not (hold_dir / 'held-0').exists() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  if (hold_dir / 'held-0').exists():
    proc.send_signal(sig)
  else:
    proc.kill()
  out, _ = proc.communicate(timeout=240)
  assert (hold_dir / 'held-0').exists(), f'the run never reached its first checkpoint:\n{out}'
  return proc.returncode, out


def test_terminated_then_killed_process_resumes_to_the_same_metrics(reference, tfds_dir, tmp_path):
  """SIGTERM (a preemption notice: checkpoint and exit 143), rerun, kill -9 mid-run (no warning), rerun:
  the final metrics and every logged row equal the uninterrupted run's."""
  ref_dir, ref = reference
  workdir = tmp_path / 'run'
  code, out = _run_held_then(signal.SIGTERM, tfds_dir, workdir, tmp_path / 'hold1')
  assert code == loop.PREEMPTED_EXIT_CODE, out
  # Held after its checkpoint of step 4, the run stops at the next step, saves it and says how to go on.
  assert 'stopped at step 5/16 (signal 15); checkpoint saved. Rerun the same command to resume.' in out, out
  code, out = _run_held_then(signal.SIGKILL, tfds_dir, workdir, tmp_path / 'hold2')
  assert code == -signal.SIGKILL, out
  assert f'resumed from {workdir / "checkpoints"} at step 5' in out, out
  assert (tmp_path / 'hold2' / 'held-0').read_text(encoding='utf-8') == '8'  # killed after saving step 8
  assert not os.path.exists(workdir / 'final_metrics.json'), 'the run should have been interrupted twice'
  done = subprocess.run(_main_cmd(tfds_dir, workdir), cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  assert 'resumed from' in done.stdout
  with open(workdir / 'final_metrics.json', encoding='utf-8') as f:
    final = json.load(f)
  assert {k: v for k, v in final.items() if k not in ('step', 'split')} == ref['eval']
  assert _last_rows(str(workdir)) == _last_rows(ref_dir)


def _train_on_cpu_devices(devices, tfds_dir, workdir, overrides):
  """The run's final metrics, trained in a process of its own on ``devices`` CPU devices."""
  script = (
      'import json, sys; sys.path.insert(0, %r)\n'
      'from conftest import small_config\n'
      'from jaxssl.train import loop\n'
      'import jax\n'
      's = loop.train_and_evaluate(small_config(%r, **%r), sys.argv[1])\n'
      'print(json.dumps({"devices": jax.device_count(), "platform": jax.default_backend(), "eval": s["eval"]}))\n'
  ) % (str(REPO / 'tests'), tfds_dir, overrides)
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}', 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', script, str(workdir)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert (result['devices'], result['platform']) == (devices, 'cpu')
  return result['eval']


def test_eight_devices_give_the_same_loss_as_one(tfds_dir, tmp_path):
  """The same config on 1 and on 8 (fake) CPU devices: the data-parallel step computes the same thing. Both on
  the CPU (one device: oneDNN's convolutions, eight: XLA's), whatever this process runs on: a GPU's TF32
  convolutions would differ by more than float32 rounding."""
  overrides = {'total_steps': 3, 'eval_every': 0, 'data.eval_limit': 128}
  if jax.default_backend() == 'cpu' and jax.device_count() == 1:  # this process is the one-device run
    one = loop.train_and_evaluate(small_config(tfds_dir, **overrides), str(tmp_path / 'd1'))['eval']
  else:
    one = _train_on_cpu_devices(1, tfds_dir, tmp_path / 'd1', overrides)
  eight = _train_on_cpu_devices(8, tfds_dir, tmp_path / 'd8', overrides)
  train1 = [r['loss'] for r in read_metrics(str(tmp_path / 'd1')) if r['split'] == 'train']
  train8 = [r['loss'] for r in read_metrics(str(tmp_path / 'd8')) if r['split'] == 'train']
  assert len(train1) == 3
  np.testing.assert_allclose(train8, train1, rtol=2e-5)
  np.testing.assert_allclose(eight['loss'], one['loss'], rtol=2e-5)
