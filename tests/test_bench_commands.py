"""The bench commands (jaxssl/bench/): each defines its flags when run, so all of them import in one process with
jaxssl.main and jaxssl.study, and each runs from its command line (on generated data: no real files needed)."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
from absl import flags

from conftest import REPO

CONFIG = str(REPO / 'configs/fmnist_supervised.py')
HAS_TORCH = importlib.util.find_spec('torch') is not None


def test_the_commands_import_in_one_process_without_defining_flags():
  """A fresh interpreter (so nothing is imported yet): the benches and jaxssl.study define no flag on import;
  jaxssl.main still defines its own at import, and they coexist with everything else. Importing
  jaxssl.bench.__main__ must not run the bench: the PyTorch worker's spawned process re-imports it so."""
  script = textwrap.dedent(f'''
      import importlib, json
      from absl import app, flags, logging  # absl's own flags (--verbosity, --pdb, ...)
      before = set(flags.FLAGS)
      names = ['jaxssl.bench', 'jaxssl.bench.step', 'jaxssl.bench.ops', 'jaxssl.bench.gpu', 'jaxssl.bench.cells',
               'jaxssl.bench.__main__',
               'jaxssl.study', 'jaxssl.cli'] + (['jaxssl.bench.torch_twin'] if {HAS_TORCH} else [])
      for name in names:
        importlib.import_module(name)
      added = sorted(set(flags.FLAGS) - before)
      importlib.import_module('jaxssl.main')
      print(json.dumps({{'added': added, 'main': sorted(set(flags.FLAGS) - before)}}))
      ''')
  done = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert not out['added'], f'defined on import: {out["added"]}'
  assert {'config', 'workdir', 'mode'} <= set(out['main'])


@pytest.mark.parametrize('module, argv, expected', [
    ('jaxssl.bench.step', ['--config', CONFIG, '--config.batch_size=8', '--steps=2', '--notorch',
                           '--torch_timing=blocks'],
     {'steps': 2, 'torch': False, 'torch_timing': 'blocks', 'warmup': 3}),
    ('jaxssl.bench.ops', ['--layers=resnet_stem,cifarnet_conv1', '--batch=2', '--notorch', '--json=ops.json'],
     {'layers': ['resnet_stem', 'cifarnet_conv1'], 'batch': 2, 'torch': False, 'json': 'ops.json', 'repeats': 5}),
    ('jaxssl.bench.gpu', ['--batch_dir=b', '--dtypes=float32', '--timed_steps=2', '--notorch', '--json=g.json'],
     {'batch_dir': 'b', 'dtypes': ['float32'], 'timed_steps': 2, 'torch': False, 'json': 'g.json', 'repeat': 1}),
], ids=['step', 'ops', 'gpu'])
def test_each_command_parses_its_flags(module, argv, expected):
  """Each command's flags, defined in a FlagValues of their own (as ``run`` defines them in absl's), parse its
  command line; in this process jaxssl.main's flags are defined too (tests import it), and nothing clashes."""
  importlib.import_module('jaxssl.main')
  fv = flags.FlagValues()
  define_flags = importlib.import_module(module).define_flags
  opts = define_flags(fv, [module, *argv]) if module == 'jaxssl.bench.step' else define_flags(fv)
  assert fv([module, *argv]) == [module]
  assert {name: getattr(opts, name).value for name in expected} == expected
  if module == 'jaxssl.bench.step':
    assert opts.config.value.batch_size == 8  # the config file loaded, the override applied


def test_the_step_bench_needs_a_config():
  fv = flags.FlagValues()
  importlib.import_module('jaxssl.bench.step').define_flags(fv)
  with pytest.raises(flags.IllegalFlagValueError, match='config'):
    fv(['bench'])


def _run(*args, env=None):
  done = subprocess.run([sys.executable, '-m', *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False, env={**os.environ, **(env or {})})
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  return done.stdout


def test_python_m_jaxssl_bench_prints_its_figures_without_torch(generated_tfds_dir, tmp_path):
  """The documented command, end to end, where PyTorch cannot be imported (a stand-in package that refuses to load
  shadows any installed torch): one JSON line of jaxssl's figures (the step's time, rate, FLOPs and memory, the
  input pipeline's rate), saying why there is no PyTorch column (PyTorch's side is test_bench.py's)."""
  (tmp_path / 'torch').mkdir()
  (tmp_path / 'torch' / '__init__.py').write_text("raise ImportError('torch is not installed here')\n")
  path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get('PYTHONPATH', '')) if p)
  out = _run('jaxssl.bench', '--config', CONFIG, f'--config.data.data_dir={generated_tfds_dir}',
             '--config.batch_size=8', '--config.data.train_limit=64', '--config.model.conv_impl=xla', '--steps=2',
             '--warmup=0', '--pipeline_batches=1', '--pipeline_workers=none', '--stage_batches=0',
             env={'PYTHONPATH': path})   # the pipeline by worker count and stage: test_input_bench.py
  (line,) = [x for x in out.splitlines() if x.startswith('{')]
  row = json.loads(line)
  assert row['model'] == 'cifarnet' and row['batch_size'] == 8 and row['conv_impl'] == 'xla'
  assert row['step_ms_median'] > 0 and row['gflops_per_step'] > 0 and row['pipeline_images_per_s'] > 0
  assert row['train_images_per_s'] > 0 and row['step_memory_mb'] > 0 and row['pipeline_to_step_ratio'] > 0
  assert row['torch'].startswith('not installed')
  assert not [k for k in row if k.startswith('torch_') or k == 'jax_over_torch']


def test_python_m_jaxssl_bench_ops_writes_its_rows(tmp_path):
  out = _run('jaxssl.bench.ops', '--layers=resnet_stem', '--batch=2', '--repeats=1', '--notorch',
             f'--json={tmp_path / "ops.json"}')
  (row,) = json.loads((tmp_path / 'ops.json').read_text())
  assert row['layer'] == 'resnet_stem' and row['fwd_xla_ms'] > 0 and json.dumps(row) in out


def test_python_m_jaxssl_bench_gpu_makes_its_batch(generated_tfds_dir, tmp_path):
  """The half that runs where the data are; the default data_dir ($TFDS_DATA_DIR) holds the generated set."""
  out = _run('jaxssl.bench.gpu', f'--make_batch={tmp_path}', '--source_batch=2',
             env={'TFDS_DATA_DIR': generated_tfds_dir})
  assert f'--batch_dir={tmp_path}' in out
  assert sorted(p.name for p in tmp_path.iterdir()) == ['batch.npz', 'info.json']


def test_python_m_jaxssl_bench_cells_trains_a_vmapped_group_as_its_cells_train(tfds_dir, tmp_path):
  """The benchmark's cells of one fraction as one vmapped computation: the same training as model by model (the
  oneDNN convolutions under vmap included), timed both ways, and one real cell's overhead."""
  out = _run('jaxssl.bench.cells', '--config', str(REPO / 'configs/fmnist_benchmark.py:quick'),
             f'--config.data.data_dir={tfds_dir}', '--config.data.train_limit=600', '--config.data.eval_limit=100',
             '--config.eval_batch_size=100', '--fractions=0.05', '--models=2', '--steps=1', '--warmup=0',
             f'--json={tmp_path}/cells.json')
  (line,) = [x for x in out.splitlines() if x.startswith('{')]
  row = json.loads(line)
  assert (row['fraction'], row['models']) == (0.05, 2)
  assert row['batch_size'] == row['subset_size'] and 20 < row['subset_size'] < 35   # 5% of ~540 images, stratified
  assert row['max_param_diff'] < 1e-5 < row['param_diff_between_models']
  assert row['vmapped_ms'] > 0 and row['sequential_ms'] > 0 and row['steps_per_cell'] == 10
  assert row['cell_wall_s'] > row['cell_overhead_s'] > 0
  with open(tmp_path / 'cells.json', encoding='utf-8') as f:
    assert json.load(f) == [row]
