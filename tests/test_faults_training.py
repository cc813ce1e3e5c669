"""Fault injection for training runs (issue #14): each test breaks one thing for real (a diverging learning rate, a
second live process, a truncated checkpoint file, another model, a torn metrics line, a full or read-only disk, an
edited data position) and checks that the run says so in one line, writes nothing broken and loses nothing.

Everything runs on the generated Fashion-MNIST files (no data files needed), at a few seconds of training each.
"""

import contextlib
import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import ml_collections
import numpy as np
import pytest

from conftest import REPO, small_config
from jaxssl import modes, report, runlog, sharding
from jaxssl.train import checkpoint as ckpt_lib, experiment, lock, loop


def _config(tfds_dir, **overrides):
  """8 steps of 64 images, a checkpoint every 4, no evaluation before the final one."""
  return small_config(tfds_dir, **{'data.train_limit': 1024, 'data.eval_limit': 128, 'total_steps': 8,
                                   'eval_every': 0, **overrides})


@pytest.fixture(scope='module')
def trained(generated_tfds_dir, tmp_path_factory):
  """One finished run (checkpoints 4 and 8) that each test copies and breaks."""
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  summary = loop.train_and_evaluate(_config(generated_tfds_dir), workdir)
  assert summary['finished'] and sorted(_steps(workdir)) == [4, 8]
  return workdir, summary


def _copy(trained, tmp_path) -> str:
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained[0], workdir)
  return workdir


def _steps(workdir) -> list[int]:
  return [int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()]


def _listing(workdir) -> dict[str, tuple[int, int]]:
  """Every file below ``workdir`` with its size and modification time: what a failed run must leave alone."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      st = os.stat(os.path.join(root, name))
      out[os.path.relpath(os.path.join(root, name), workdir)] = (st.st_size, st.st_mtime_ns)
  return out


def _truncate_state(workdir, step):
  """Cuts the largest array file of a checkpoint's train state to 100 bytes, as a full disk or a crash would."""
  files = glob.glob(os.path.join(workdir, 'checkpoints', str(step), 'state', '**', 'd', '*'), recursive=True)
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, 100)


def _rows(workdir):
  """(step, split) of every row of metrics.jsonl, in order, and the rows by that key (without the timing)."""
  rows = runlog.read_metrics(workdir)
  return ([(r['step'], r['split']) for r in rows],
          {(r['step'], r['split']): {k: v for k, v in r.items() if k != 'images_per_s'} for r in rows})


def _main(workdir, *extra, timeout=300):
  cmd = [sys.executable, '-m', 'jaxssl.main', '--config', str(REPO / 'configs/fmnist_supervised.py'),
         '--workdir', str(workdir), *extra]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def _one_error_line(out) -> str:
  """The error as the command's last stderr line (the only line it adds), with no traceback of ours."""
  last = out.stderr.strip().splitlines()[-1]
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
  assert last.startswith('error: '), out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  return last


# ------------------------------------------------------------------------------------------------ divergence


def test_a_nonfinite_step_changes_nothing_and_says_so(generated_tfds_dir):
  """The step itself: the first step whose loss or gradient is not finite returns the state it was given."""
  exp = experiment.build_experiment(_config(generated_tfds_dir, **{'optim.lr': 1e6}))
  from jaxssl.data import pipeline  # pylint: disable=import-outside-toplevel
  batches = pipeline.train_iterator(exp.train_source, exp.tasks, global_batch=64, seed=0)
  state, rng = exp.state, jax.random.PRNGKey(0)
  for _ in range(6):
    before = jax.device_get(state)  # the step donates its input
    state, metrics = exp.train_step(state, sharding.shard_batch(next(batches), exp.mesh), rng)
    if float(metrics['nonfinite']):
      break
  else:
    pytest.fail('lr=1e6 should diverge within 6 steps')
  assert not math.isfinite(float(metrics['loss'])) or not math.isfinite(float(metrics['grad_norm']))
  after = jax.device_get(state)
  assert int(after.step) == int(before.step) + 1
  for old, new in zip(jax.tree.leaves((before.params, before.model_state, before.opt_state)),
                      jax.tree.leaves((after.params, after.model_state, after.opt_state))):
    np.testing.assert_array_equal(new, old)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(after.params))


def test_divergence_stops_the_run_and_keeps_the_good_checkpoints(trained, generated_tfds_dir, tmp_path, capsys):
  """Resuming a good run at lr=1e6: it stops at the first non-finite step with one line and exit code 3, and saves
  nothing after it; the good checkpoints and final_metrics.json stay as they were, and resume at a sane lr."""
  workdir = _copy(trained, tmp_path)
  checkpoints = {k: v for k, v in _listing(workdir).items() if k.startswith('checkpoints')}
  with open(os.path.join(workdir, 'final_metrics.json'), encoding='utf-8') as f:
    final = f.read()
  result = loop.train_and_evaluate(_config(generated_tfds_dir, total_steps=16, **{'optim.lr': 1e6}), workdir)
  out = capsys.readouterr().out
  assert result['exit_code'] == loop.DIVERGED_EXIT_CODE == 3 and not result['finished']
  line = [l for l in out.splitlines() if l.startswith('stopped: non-finite')]
  assert len(line) == 1 and 'the checkpoints up to step 8 are kept' in line[0], out
  assert 'lower --config.optim.lr (now 1e+06)' in line[0] and 'skip_nonfinite_steps' in line[0]
  assert int(re.search(r' at step (\d+)', line[0]).group(1)) > 8
  assert {k: v for k, v in _listing(workdir).items() if k.startswith('checkpoints')} == checkpoints
  with open(os.path.join(workdir, 'final_metrics.json'), encoding='utf-8') as f:
    assert f.read() == final
  for row in runlog.read_metrics(workdir):
    assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row
  assert not os.path.exists(os.path.join(workdir, lock.LOCK_FILE))
  # The kept checkpoint is good: the run goes on from it at the lr it was trained with.
  again = loop.train_and_evaluate(_config(generated_tfds_dir, total_steps=10), workdir)
  assert again['finished'] and again['step'] == 10 and 'resumed from' in capsys.readouterr().out


def test_skip_nonfinite_steps_lets_n_pass_then_stops(generated_tfds_dir, tmp_path, capsys):
  config = _config(generated_tfds_dir, total_steps=12, **{'optim.lr': 1e6, 'optim.skip_nonfinite_steps': 3})
  result = loop.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert result['exit_code'] == loop.DIVERGED_EXIT_CODE, out
  assert 'warning: skipped 1 non-finite step(s)' in out
  assert '4 non-finite steps, more than --config.optim.skip_nonfinite_steps=3' in out
  skipped = [r for r in runlog.read_metrics(str(tmp_path)) if r.get('nonfinite_steps')]
  assert sum(r['nonfinite_steps'] for r in skipped) == 3
  assert not os.path.exists(tmp_path / 'final_metrics.json')
  for step in _steps(str(tmp_path)):  # checkpoints after skipped steps hold finite states and the count
    with open(tmp_path / 'checkpoints' / str(step) / 'meta' / 'metadata', encoding='utf-8') as f:
      assert 0 <= json.load(f)['nonfinite_skipped'] <= 3


# ------------------------------------------------------------------------------------------------ the lock


_HOLDER = textwrap.dedent('''
    import sys, time
    from jaxssl.train.lock import WorkdirLock
    WorkdirLock(sys.argv[1]).acquire()
    print('held', flush=True)
    time.sleep(120)
''')


def test_a_live_run_holds_the_workdir_and_a_killed_ones_lock_is_taken_over(generated_tfds_dir, tmp_path, capsys):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  # pylint: disable-next=consider-using-with  # killed below, as the test's fault
  holder = subprocess.Popen([sys.executable, '-c', _HOLDER, str(workdir)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    out = _main(workdir, f'--config.data.data_dir={generated_tfds_dir}', '--config.total_steps=4')
    line = _one_error_line(out)
    assert f'is in use by another training run (host {socket.gethostname()}, pid {holder.pid}, started' in line
    assert os.listdir(workdir) == [lock.LOCK_FILE]  # the second run wrote nothing
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
  held = lock.WorkdirLock(str(workdir))
  held.acquire()  # kill -9 left the lock behind: same host, process gone, taken over at once
  assert f'took over the lock of a run that is gone (its process is gone: host {socket.gethostname()}, ' \
         f'pid {holder.pid}' in capsys.readouterr().out
  with open(workdir / lock.LOCK_FILE, encoding='utf-8') as f:
    assert json.load(f)['pid'] == os.getpid()
  held.release()
  assert not (workdir / lock.LOCK_FILE).exists()


def test_another_hosts_lock_is_taken_over_only_after_its_heartbeat_stops(tmp_path):
  path = tmp_path / lock.LOCK_FILE
  path.write_text(json.dumps({'host': 'a-host-that-is-gone', 'pid': 1, 'started': 'yesterday'}), encoding='utf-8')
  with pytest.raises(lock.LockError, match=r'in use by another training run \(host a-host-that-is-gone, pid 1, '
                                           r'started yesterday, last heartbeat \d+ s ago'):
    lock.WorkdirLock(str(tmp_path), timeout_s=600).acquire()
  old = time.time() - 700
  os.utime(path, (old, old))
  with lock.WorkdirLock(str(tmp_path), timeout_s=600):
    assert json.loads(path.read_text(encoding='utf-8'))['pid'] == os.getpid()
  # A held lock's heartbeat keeps it fresh for other hosts.
  with lock.WorkdirLock(str(tmp_path), timeout_s=2, heartbeat_s=0.1):
    os.utime(path, (old, old))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 1


_RACER = textwrap.dedent('''
    import sys, time
    from jaxssl.train.lock import LockError, WorkdirLock
    lock = WorkdirLock(sys.argv[1])
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    try:
      lock.acquire()
    except LockError:
      print('refused', flush=True)
    else:
      print('held', flush=True)
      time.sleep(3)
      lock.release()
''')


def test_runs_racing_for_a_stale_lock_leave_one_holder(tmp_path):
  (tmp_path / lock.LOCK_FILE).write_text(json.dumps({'host': socket.gethostname(), 'pid': 2 ** 22 + 1,
                                                     'pid_namespace': os.readlink('/proc/self/ns/pid')}),
                                         encoding='utf-8')
  start = time.time() + 8  # after every racer imported jax
  racers = [subprocess.Popen([sys.executable, '-c', _RACER, str(tmp_path), str(start)], cwd=REPO,  # pylint: disable=consider-using-with
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
  outcomes = sorted(r.communicate(timeout=120)[0].strip().splitlines()[-1] for r in racers)  # after any note
  assert outcomes == ['held', 'refused', 'refused', 'refused']


_MULTIHOST = textwrap.dedent('''
    import os, sys, time
    import jax
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address='127.0.0.1:' + sys.argv[2], num_processes=2,
                               process_id=int(sys.argv[3]))
    from jaxssl.train import lock
    try:
      with lock.hold(sys.argv[1]):
        print('held', flush=True)
        deadline = time.time() + 120
        while sys.argv[4] and not os.path.exists(sys.argv[4]) and time.time() < deadline:
          time.sleep(0.1)
    except lock.LockError as e:
      print('refused:', e, flush=True)
''')


def _free_port() -> int:
  with contextlib.closing(socket.socket()) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _said(stdout: str) -> str:
  """What a process printed, without gloo's connection lines."""
  return '\n'.join(l for l in stdout.strip().splitlines() if not l.startswith('[Gloo]'))


def test_a_multi_process_run_has_one_holder(tmp_path):
  """Two processes of one run: process 0 holds the lock for both; a second two-process run is refused in both of
  its processes (process 0 with the holder named), without hanging."""
  workdir, release = tmp_path / 'run', tmp_path / 'release'
  workdir.mkdir()

  def run(port, until):
    return [subprocess.Popen([sys.executable, '-c', _MULTIHOST, str(workdir), str(port), str(i), until],  # pylint: disable=consider-using-with
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]

  first = run(_free_port(), str(release))
  try:
    deadline = time.time() + 120
    while not (workdir / lock.LOCK_FILE).exists() and time.time() < deadline:
      time.sleep(0.2)
    with open(workdir / lock.LOCK_FILE, encoding='utf-8') as f:
      holder = json.load(f)
    second = [_said(p.communicate(timeout=120)[0]) for p in run(_free_port(), '')]
  finally:
    release.touch()
  outs = [p.communicate(timeout=120) for p in first]
  assert [_said(o) for o, _ in outs] == ['held', 'held'], outs
  assert holder['pid'] == first[0].pid and holder['processes'] == 2
  assert second[0].startswith(f"refused: {workdir} is in use by another training run (host {holder['host']}, "
                              f"pid {first[0].pid}"), second
  assert second[1].startswith('refused:') and 'process 0 says which' in second[1], second
  assert not (workdir / lock.LOCK_FILE).exists()


# ------------------------------------------------------------------------------------------------ checkpoints


def test_an_unreadable_checkpoint_gives_way_to_the_newest_readable_one(trained, generated_tfds_dir, tmp_path,
                                                                       capsys):
  workdir = _copy(trained, tmp_path)
  _truncate_state(workdir, 8)
  # --mode=eval reads only: it uses step 4 and leaves step 8 where it is.
  result = modes.evaluate_checkpoint(_config(generated_tfds_dir, mode='eval'), workdir)
  assert result['step'] == 4 and sorted(_steps(workdir)) == [4, 8]
  out = capsys.readouterr().out
  assert f"warning: the checkpoint {os.path.join(workdir, 'checkpoints', '8')} cannot be read" in out
  assert 'using step 4 instead. The unreadable one is left as it is' in out
  # Training resumes from step 4, moves step 8 aside (kept), saves a new step 8 and ends where the run did.
  os.remove(os.path.join(workdir, 'final_metrics.json'))
  summary = loop.train_and_evaluate(_config(generated_tfds_dir), workdir)
  out = capsys.readouterr().out
  assert 'using step 4 instead. The unreadable one is moved aside to ' in out and 'resumed from' in out
  assert summary['finished'] and summary['eval'] == trained[1]['eval']
  assert sorted(_steps(workdir)) == [4, 8] and len(glob.glob(os.path.join(workdir, 'checkpoints', '8.corrupt-*'))) == 1
  keys, _ = _rows(workdir)
  assert len(keys) == len(set(keys))  # the steps run again were logged once
  # Nothing readable: one error naming each step, and every checkpoint left in place.
  for step in (4, 8):
    _truncate_state(workdir, step)
  before = _listing(os.path.join(workdir, 'checkpoints'))
  with pytest.raises(ckpt_lib.CheckpointError, match=r'no checkpoint in .*checkpoints can be read \(step 8: .*; '
                                                     r'step 4: .*\); they are left as they are'):
    loop.train_and_evaluate(_config(generated_tfds_dir), workdir)
  assert _listing(os.path.join(workdir, 'checkpoints')) == before


def test_a_workdir_of_another_model_is_one_line(trained, generated_tfds_dir, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _listing(workdir)
  config = _config(generated_tfds_dir, **{'model.name': 'resnet20', 'model.options': ml_collections.ConfigDict()})
  with pytest.raises(ckpt_lib.StateMismatchError) as err:
    loop.train_and_evaluate(config, workdir)
  message = str(err.value)
  assert "holds a run of another config: model.name ('cifarnet' there, 'resnet20' here)" in message
  assert "model.options.dropout (0.0 there, 'unset' here)" in message
  assert 'Use another --workdir for this config, or rerun with the config file and overrides that wrote' in message \
      and '\n' not in message
  assert _listing(workdir) == before
  with pytest.raises(ckpt_lib.StateMismatchError, match='holds a run of another config: model.name'):
    modes.evaluate_checkpoint(config, workdir)


def _set_iterator(workdir, step, state):
  path = os.path.join(workdir, 'checkpoints', str(step), 'data_iter', 'process_0-of-1.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(state, f)


def test_an_edited_data_position_is_a_clear_error(trained, generated_tfds_dir, tmp_path):
  workdir = _copy(trained, tmp_path)
  config = _config(generated_tfds_dir, total_steps=12)
  _set_iterator(workdir, 8, {'next_index': 99})
  with pytest.raises(ckpt_lib.CheckpointError, match=r'has its data iterator at batch 99, but its train state at '
                                                     r'step 8: .* edited or mixed from two'):
    loop.train_and_evaluate(config, workdir)
  _set_iterator(workdir, 8, {'next_index': -3})
  with pytest.raises(ckpt_lib.CheckpointError, match=r'holds a data iterator position that does not fit this '
                                                     r'dataset \(IndexError: .*-3 is out of range'):
    loop.train_and_evaluate(config, workdir)
  _set_iterator(workdir, 8, {'next_index': 8})
  with pytest.raises(ckpt_lib.CheckpointError, match=r'holds a data position in another dataset \(records 1024 '
                                                     r'there, 512 here\); resume with the data settings'):
    loop.train_and_evaluate(_config(generated_tfds_dir, total_steps=12, **{'data.train_limit': 512}), workdir)
  assert sorted(_steps(workdir)) == [4, 8]


# ------------------------------------------------------------------------------------------------ metrics.jsonl


def test_a_torn_metrics_line_is_tolerated_and_a_resume_logs_each_step_once(trained, generated_tfds_dir, tmp_path,
                                                                          capsys):
  """A run killed at step 7 mid-write (last checkpoint: 4): a torn last line, and rows of steps 5-7 that the
  resumed run repeats. Reading tolerates it, and the resumed run leaves the same rows as the uninterrupted one."""
  workdir = _copy(trained, tmp_path)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '8'))
  os.remove(os.path.join(workdir, 'final_metrics.json'))
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path, encoding='utf-8') as f:
    lines = [l for l in f if json.loads(l)['step'] <= 7]
  with open(path, 'w', encoding='utf-8') as f:
    f.write(''.join(lines) + '{"step": 8, "split": "tra')
  assert [r['step'] for r in runlog.read_metrics(workdir)] == list(range(1, 8))
  assert f'warning: {path}: skipped 1 line(s) that are not JSON rows (line 8;' in capsys.readouterr().err
  row, why = report.run_row(workdir)
  assert row is None and why.endswith('(training logged up to step 7)')
  summary = loop.train_and_evaluate(_config(generated_tfds_dir), workdir)
  assert summary['finished']
  assert 'dropped 3 row(s) of steps this run repeats (after 4) and 1 torn line(s) (line 8)' in capsys.readouterr().out
  keys, rows = _rows(workdir)
  assert len(keys) == len(set(keys))
  assert rows == _rows(trained[0])[1]
  # Rerun once finished (as after a kill during the final evaluation): it evaluates again, and logs it once.
  assert loop.train_and_evaluate(_config(generated_tfds_dir), workdir)['finished']
  assert _rows(workdir)[0] == keys


# ------------------------------------------------------------------------------------------------ the disk


def test_a_workdir_that_is_a_file_is_one_line(generated_tfds_dir, tmp_path):
  afile = tmp_path / 'run'
  afile.write_text('not a folder', encoding='utf-8')
  with pytest.raises(runlog.WriteError, match=rf'^{re.escape(str(afile))}: File exists \(EEXIST\); a file stands '
                                              'where a folder is needed'):
    loop.train_and_evaluate(_config(generated_tfds_dir), str(afile))
  # Below it: the file in the way is named (it is what to move), not the folder that could not be made.
  with pytest.raises(runlog.WriteError, match=rf'^{re.escape(str(afile))}: Not a directory \(ENOTDIR\); a file '
                                              'stands where a folder is needed'):
    loop.train_and_evaluate(_config(generated_tfds_dir), str(afile / 'sub'))
  line = _one_error_line(_main(afile, f'--config.data.data_dir={generated_tfds_dir}'))
  assert line.startswith(f'error: {afile}: File exists (EEXIST)')
  assert afile.read_text(encoding='utf-8') == 'not a folder'


def test_a_full_disk_under_a_metrics_row_is_one_line(tmp_path):
  """/dev/full refuses every write with ENOSPC, as a full disk does."""
  os.symlink('/dev/full', tmp_path / 'metrics.jsonl')
  writer = runlog.MetricWriter(str(tmp_path))
  with pytest.raises(runlog.WriteError, match=r'metrics.jsonl: No space left on device \(ENOSPC\); free space '
                                              r'there and rerun the same command'):
    writer.write(1, 'train', {'loss': 1.0})
  writer.close()
  assert runlog.read_metrics(str(tmp_path)) == []


_TOO_BIG = textwrap.dedent('''
    import resource, sys
    from jaxssl import runlog
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))  # the kernel refuses a longer file: EFBIG
    try:
      runlog.write_json(sys.argv[1], {'x': 'y' * 5000})
    except runlog.WriteError as e:
      print(e)
''')


def test_a_refused_write_keeps_the_previous_file(tmp_path):
  path = tmp_path / 'final_metrics.json'
  path.write_text('{"step": 8}', encoding='utf-8')
  out = subprocess.run([sys.executable, '-c', _TOO_BIG, str(path)], cwd=REPO, capture_output=True, text=True,
                       timeout=120, check=True)
  assert out.stdout.startswith(f'{path}: File too large (EFBIG); free space there'), out.stdout + out.stderr
  assert path.read_text(encoding='utf-8') == '{"step": 8}' and os.listdir(tmp_path) == ['final_metrics.json']


_TMPFS = textwrap.dedent('''
    set -u
    mnt=$1; out=$2; shift 2
    mount -t tmpfs -o size=14m none "$mnt" || exit 97
    "$@" > "$out/full.log" 2>&1; echo $? > "$out/full.rc"
    cp -a "$mnt/run" "$out/after_full"
    mount -o remount,ro "$mnt" || exit 98
    "$@" > "$out/ro.log" 2>&1; echo $? > "$out/ro.rc"
    "$@" --mode=eval > "$out/ro_eval.log" 2>&1; echo $? > "$out/ro_eval.rc"
    cp -a "$mnt/run" "$out/after_ro"
''')


def test_a_full_then_read_only_disk_is_one_line_and_loses_nothing(generated_tfds_dir, tmp_path):
  """A 14 MiB tmpfs (in a private mount namespace) holds one checkpoint, not two: the second save fails. Then the
  same disk read-only: the rerun and --mode=eval stop before computing anything. Each says it in one line."""
  if not shutil.which('unshare'):
    pytest.skip('needs unshare (util-linux) to mount a small tmpfs')
  mnt, out = tmp_path / 'mnt', tmp_path / 'out'
  mnt.mkdir()
  out.mkdir()
  cmd = [sys.executable, '-m', 'jaxssl.main', '--config', str(REPO / 'configs/fmnist_supervised.py'),
         '--workdir', str(mnt / 'run'), f'--config.data.data_dir={generated_tfds_dir}',
         '--config.data.train_limit=1024', '--config.data.eval_limit=128', '--config.batch_size=64',
         '--config.eval_batch_size=128', '--config.total_steps=8', '--config.eval_every=0',
         '--config.checkpoint_every=4', '--config.log_every=1']
  done = subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'bash', '-c', _TMPFS, 'tmpfs', str(mnt),
                         str(out), *cmd], cwd=REPO, capture_output=True, text=True, timeout=540, check=False)
  if done.returncode in (97, 98) or 'unshare:' in done.stderr:
    pytest.skip(f'cannot mount a tmpfs in a private namespace here: {done.stderr.strip()[-300:]}')

  def result(name):
    log = (out / f'{name}.log').read_text(encoding='utf-8')
    return int((out / f'{name}.rc').read_text(encoding='utf-8')), log.strip().splitlines()[-1], log

  code, last, log = result('full')
  assert code == 2, log[-3000:]
  # The failed save of step 8 fills the disk: the error names it, or a picture of the final evaluation after it.
  assert last.startswith(f"error: {mnt / 'run'}/") and last.endswith(
      'No space left on device (ENOSPC); free space there and rerun the same command (what was written before is '
      'intact)'), log[-3000:]
  kept = str(out / 'after_full')
  assert _steps(kept) == [4] and [r['step'] for r in runlog.read_metrics(kept) if r['split'] == 'train'] == \
      list(range(1, 9))
  exp = experiment.build_experiment(_config(generated_tfds_dir))
  ckpt = ckpt_lib.Checkpointer(os.path.join(kept, 'checkpoints'), read_only=True)
  state, _ = ckpt.restore(None, exp.state, sharding.replicated(exp.mesh))
  ckpt.close()
  assert int(state.step) == 4
  for name in ('ro', 'ro_eval'):
    code, last, log = result(name)
    assert code == 2, log[-3000:]
    where = mnt / 'run' / (lock.LOCK_FILE if name == 'ro' else '')  # eval: the workdir it cannot write results to
    assert last == (f'error: {str(where).rstrip("/")}: Read-only file system (EROFS); the run cannot write there: '
                    'make it writable, or point --workdir elsewhere'), log[-3000:]
  assert _listing(str(out / 'after_ro')) == _listing(kept)


def test_a_run_that_lost_its_lock_stops_before_saving(tmp_path):
  """A lock taken over while its run was stalled (another run's token on disk) stops that run at its next save."""
  lock_lib = lock
  held = lock_lib.WorkdirLock(str(tmp_path))
  held.acquire()
  try:
    held.check()                                   # still ours: nothing happens
    record = json.loads((tmp_path / lock_lib.LOCK_FILE).read_text())
    (tmp_path / lock_lib.LOCK_FILE).write_text(json.dumps({**record, 'token': 'another run'}))
    with pytest.raises(lock_lib.LockError, match='lost its lock'):
      held.check()
  finally:
    held.release()
  assert (tmp_path / lock_lib.LOCK_FILE).exists()  # the other run's lock is left alone
