"""Several real processes as one run: 2 processes on localhost with 2 CPU devices each form one 4-device mesh
(jax.distributed over gloo, found from Slurm's variables as on a cluster), started with `python -m jaxssl.main
--multihost` as launch/local.sh starts them. A tiny rotation run trains, checkpoints, evaluates, is preempted on
one host, resumes, and equals both an uninterrupted 2-process run and a 1-process 4-device run; its checkpoints
restore on 1 process and 1 device for every mode that reads them."""

import contextlib
import json
import logging
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
import numpy as np
import pytest

from conftest import REPO
from jaxssl import modes
from jaxssl.runlog import read_metrics
from jaxssl.train import checkpoint as ckpt_lib, loop

STEPS = 12
FLAGS = ['--config', 'configs/fmnist_rotation.py:quick', f'--config.total_steps={STEPS}', '--config.log_every=1',
         '--config.eval_every=6', '--config.checkpoint_every=4', '--config.data.train_limit=512',
         '--config.data.eval_limit=256', '--config.keep_checkpoints=10']  # eval batch 250: padded to 252 on 4


def _free_port() -> int:
  with contextlib.closing(socket.socket()) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices: int, process: int | None = None, processes: int = 2, port: int = 0) -> dict[str, str]:
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  env.pop('JAX_PLATFORMS', None)
  if process is not None:  # what jax's Slurm detection reads (launch/local.sh sets the same)
    env.update(SLURM_JOB_ID='1', SLURM_STEP_NODELIST='localhost', SLURM_NTASKS=str(processes),
               SLURM_PROCID=str(process), SLURM_LOCALID=str(process), SLURM_STEP_NUM_NODES='1',
               JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}')
  return env


def _start(workdir, data_dir, *, processes=2, devices=2, extra=(), hold_dir=None) -> list[subprocess.Popen]:
  """``processes`` processes of one run (1: a plain process of ``devices`` devices); output in workdir/../.
  ``hold_dir``: each process holds still after its first checkpoint (tests/held_run.py)."""
  port = _free_port()
  out = []
  for i in range(processes):
    multi = processes > 1
    log = open(f'{workdir}.p{i}.log', 'w', encoding='utf-8')  # pylint: disable=consider-using-with
    main = ['-m', 'jaxssl.main'] if hold_dir is None else [str(REPO / 'tests' / 'held_run.py'), str(hold_dir)]
    cmd = [sys.executable, *main, *(['--multihost'] if multi else []), *FLAGS,
           f'--config.data.data_dir={data_dir}', f'--workdir={workdir}', *extra]
    out.append(subprocess.Popen(cmd, cwd=REPO, env=_env(devices, i if multi else None, processes, port),  # pylint: disable=consider-using-with
                                stdout=log, stderr=subprocess.STDOUT, text=True))
    log.close()
  return out


def _wait(procs, workdir, timeout=240) -> list[int]:
  try:
    return [p.wait(timeout=timeout) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f'the processes did not end within {timeout} s:\n' + _output(workdir, len(procs)))
  return []


def _output(workdir, processes=2) -> str:
  return '\n'.join(f'--- process {i}\n' + _said(f'{workdir}.p{i}.log') for i in range(processes))


def _said(path) -> str:
  """A process's output without gloo's connection lines (several threads print them: they can interleave)."""
  with open(path, encoding='utf-8') as f:
    return '\n'.join(l for l in f.read().splitlines() if '[Gloo]' not in l and 'peer ranks' not in l)


def _warnings(said: str) -> list[str]:
  """absl's warning and error lines (orbax's and jax's among them): a clean run prints none."""
  return [l for l in said.splitlines() if re.match(r'[WE]\d{4} ', l)]


def _rows(workdir):
  return {(r['step'], r['split']): {k: v for k, v in r.items() if k != 'images_per_s'} for r in read_metrics(workdir)}


def _close(a: dict, b: dict, rtol=2e-4, atol=2e-5) -> None:
  assert a.keys() == b.keys()
  for key in a:
    assert a[key].keys() == b[key].keys()
    for k, value in a[key].items():
      if isinstance(value, str):
        assert value == b[key][k]
      else:
        np.testing.assert_allclose(value, b[key][k], rtol=rtol, atol=atol, err_msg=f'{key} {k}')


@pytest.fixture(scope='module')
def runs(generated_tfds_dir, tmp_path_factory):
  """An uninterrupted 2-process run and a 1-process 4-device run of the same config."""
  base = tmp_path_factory.mktemp('multihost')
  two, one = str(base / 'two'), str(base / 'one')
  codes = _wait(_start(two, generated_tfds_dir), two)
  assert codes == [0, 0], _output(two)
  codes = _wait(_start(one, generated_tfds_dir, processes=1, devices=4), one)
  assert codes == [0], _output(one, 1)
  return two, one


def test_two_processes_train_checkpoint_and_equal_one_process_of_four_devices(runs):
  two, one = runs
  said = _said(f'{two}.p0.log')
  assert 'batch 32 over 4 cpu device(s) in 2 process(es)' in said
  assert not _warnings(said), said
  assert _said(f'{two}.p1.log').strip() == ''  # process 1 logs nothing: process 0 speaks for the run
  assert sorted(int(s) for s in os.listdir(os.path.join(two, 'checkpoints')) if s.isdigit()) == [4, 8, 12]
  # Each process saved its own position in the data.
  assert sorted(f for f in os.listdir(os.path.join(two, 'checkpoints', '12', 'data_iter')) if 'process' in f) == \
      ['process_0-of-2.json', 'process_1-of-2.json']
  with open(os.path.join(two, 'final_metrics.json'), encoding='utf-8') as f:
    final = json.load(f)
  assert final['step'] == STEPS and final['rotation/acc'] > 0.25
  # The same batches (records, crops, flips) on the same 4-device mesh: the same run up to float rounding.
  _close(_rows(two), _rows(one))


def test_sigterm_to_one_process_stops_both_at_one_step_and_the_rerun_resumes_exactly(runs, generated_tfds_dir,
                                                                                      tmp_path):
  two, _ = runs
  workdir, hold = str(tmp_path / 'run'), tmp_path / 'hold'
  hold.mkdir()
  # Both processes hold still after their checkpoint of step 4 (tests/held_run.py): the signal cannot come after
  # the run's last step, however loaded the machine.
  procs = _start(workdir, generated_tfds_dir, hold_dir=hold)
  deadline = time.time() + 180
  while not all((hold / f'held-{i}').exists() for i in (0, 1)) and time.time() < deadline and \
      all(p.poll() is None for p in procs):
    time.sleep(0.05)
  assert all((hold / f'held-{i}').exists() for i in (0, 1)), _output(workdir)
  procs[1].send_signal(signal.SIGTERM)  # one host preempted
  sent = time.time()
  (hold / 'release').touch()  # the other goes on unsignalled
  assert _wait(procs, workdir) == [143, 143], _output(workdir)
  assert time.time() - sent < 30
  said = _said(f'{workdir}.p0.log')
  stopped = [l for l in said.splitlines() if l.startswith('stopped at step')]
  assert len(stopped) == 1 and '(another process was stopped)' in stopped[0], said
  step = int(stopped[0].split()[3].split('/')[0])
  assert 4 < step < STEPS
  ckpts = os.path.join(workdir, 'checkpoints')
  assert max(int(s) for s in os.listdir(ckpts) if s.isdigit()) == step  # the step both stopped at, saved by both
  assert sorted(f for f in os.listdir(os.path.join(ckpts, str(step), 'data_iter')) if 'process' in f) == \
      ['process_0-of-2.json', 'process_1-of-2.json']

  assert _wait(_start(workdir, generated_tfds_dir), workdir) == [0, 0], _output(workdir)
  said = _said(f'{workdir}.p0.log')
  assert f'resumed from {ckpts} at step {step}' in said and not _warnings(said), said
  assert _rows(workdir) == _rows(two)  # exactly the uninterrupted 2-process run


def test_each_process_reads_a_disjoint_part_of_every_global_batch():
  """Real processes: each reads its own devices' rows of every global batch, together exactly the batch (records
  and random draws) that one process of one device reads."""
  script = textwrap.dedent('''
      import dataclasses, json, sys
      import jax
      if sys.argv[1] == 'multi':
        jax.distributed.initialize()
      from jaxssl import sharding
      from jaxssl.data import pipeline

      @dataclasses.dataclass(frozen=True)
      class Drawn:
        name: str = 'raw'
        def transform(self, batch, rng, *, train):
          return {**batch, 'draw': rng.integers(0, 2**31, len(batch['weight']))}

      records = [{'image': [[[i]]], 'label': i % 10, 'index': i} for i in range(96)]
      mesh = sharding.make_mesh()
      it = pipeline.train_iterator(records, [Drawn()], global_batch=16, seed=0, mesh=mesh)
      out = [{k: next(it)['raw'][k].tolist() for k in ('index', 'draw')} for _ in range(8)]
      layout = sharding.batch_layout(mesh, 16)
      print(json.dumps({'chunks': layout.chunks, 'batches': out}))
  ''')
  port = _free_port()
  multi = [subprocess.Popen([sys.executable, '-c', script, 'multi'], cwd=REPO, env=_env(2, i, 2, port),  # pylint: disable=consider-using-with
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  single = subprocess.run([sys.executable, '-c', script, 'single'], cwd=REPO, env=_env(1), capture_output=True,
                          text=True, timeout=120, check=True)
  parts = [json.loads(_last_line(p.communicate(timeout=120)[0])) for p in multi]
  whole = json.loads(_last_line(single.stdout))
  assert [p['chunks'] for p in parts] == [[0, 1], [2, 3]] and whole['chunks'] == [0]
  for b, batch in enumerate(whole['batches']):
    mine, theirs = parts[0]['batches'][b], parts[1]['batches'][b]
    assert len(mine['index']) == len(theirs['index']) == 8 and not set(mine['index']) & set(theirs['index'])
    assert mine['index'] + theirs['index'] == batch['index'] and mine['draw'] + theirs['draw'] == batch['draw']


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


class _Warnings(logging.Handler):

  def __init__(self):
    super().__init__(logging.WARNING)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def test_a_multi_process_checkpoint_restores_on_one_process_and_one_device(runs, generated_tfds_dir, tmp_path):
  """--mode=eval, --mode=knn and init_from read the 2-process run's checkpoints on this 1-device process, onto
  explicit shardings (no orbax warning), with the figures the run itself reported."""
  from configs import fmnist_finetune, fmnist_rotation  # pylint: disable=import-outside-toplevel
  two, _ = runs
  assert jax.device_count() == 1
  config = fmnist_rotation.get_config('quick')
  config.data.data_dir = generated_tfds_dir
  config.data.train_limit, config.data.eval_limit, config.total_steps = 512, 256, STEPS
  warnings = _Warnings()
  logging.getLogger().addHandler(warnings)
  logging.getLogger('absl').addHandler(warnings)
  try:
    config.mode, config.eval_step = 'eval', -1
    result = modes.evaluate_checkpoint(config, two)
    with open(os.path.join(two, 'final_metrics.json'), encoding='utf-8') as f:
      final = json.load(f)
    assert result['step'] == STEPS
    np.testing.assert_allclose(result['rotation/acc'], final['rotation/acc'], atol=1e-6)
    config.mode, config.init_from = 'knn', two
    knn = modes.evaluate_knn(config, str(tmp_path / 'knn'))
    assert knn['backbone']['checkpoint'].endswith(os.path.join('checkpoints', str(STEPS))) and knn['top1'] > 0.1
    tune = fmnist_finetune.get_config()
    tune.data.data_dir, tune.data.train_limit, tune.data.eval_limit = generated_tfds_dir, 256, 256
    tune.init_from, tune.total_steps, tune.eval_every, tune.batch_size = two, 2, 0, 32
    summary = loop.train_and_evaluate(tune, str(tmp_path / 'tune'))
    assert summary['finished']
  finally:
    logging.getLogger().removeHandler(warnings)
    logging.getLogger('absl').removeHandler(warnings)
  # Training resumes only with the process count that saved the data positions: one line, and nothing set aside.
  copy = str(tmp_path / 'copy')
  shutil.copytree(two, copy)
  config.mode, config.init_from, config.total_steps = 'train', '', STEPS + 4
  with pytest.raises(ckpt_lib.CheckpointError, match=r'was saved by a run of 2 process\(es\), this one has 1: '
                                                     r'resume it with 2'):
    loop.train_and_evaluate(config, copy)
  assert sorted(os.listdir(os.path.join(copy, 'checkpoints'))) == ['12', '4', '8']
  assert not [l for l in warnings.lines if 'orbax' in l.lower() or 'sharding' in l.lower() or 'checkpoint' in l.lower()
              or 'Metadata' in l], warnings.lines
