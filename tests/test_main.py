"""The command line: bad input gets one clear error before anything is compiled or written."""

import re
import subprocess
import sys

import pytest

from conftest import REPO

CONFIG = str(REPO / 'configs/fmnist_supervised.py')


@pytest.mark.parametrize('args, message', [
    (['--config.model.name=vgg'], "unknown model 'vgg'; choose one of: cifarnet"),
    (['--config.data.name=cifar10'], "unknown dataset 'cifar10'; choose one of: deepfashion, deepfashion_attr, "
                                     'fashion_mnist'),
    (['--mode=serve'], "unknown mode 'serve'; choose one of: train, eval, knn, predict"),
    (['--mode=predict'], "needs a task of kind 'category_attributes'"),
    (['--config.batch_size=big'], 'batch_size'),               # ill-typed override
    (['--config.tasks.classify.crop=2'], "task 'classify' (Classification) has no option(s) ['crop']; its "
                                         "options are: ['crop_padding', 'feature', 'flip', 'freeze_backbone'"),
    (['--config.optim.lrr=0.1'], 'no such config field: optim.lrr (did you mean optim.lr?); optim has: b1, b2'),
    (['--config.evals.knn.k=50'], "the config has no evals.knn to set k in; add it whole, e.g. "
                                  "--config.evals.knn=\"{'k': 50}\""),
    (['--config', 'runs/x/config.json'], 'a config is a Python file whose get_config() returns it'),
    (['--config', str(REPO / 'configs/common.py')], 'the file has no get_config()'),
    (['--config.model.conv_impl=fast'], "unknown conv impl 'fast'; choose one of: auto, xla, im2col"),
    (['--config.model.name=resnet20'], "model 'resnet20' does not take the option(s) ['dropout']"),
    (['--config.optim.skip_nonfinite_steps=-1'], 'skip_nonfinite_steps must be >= 0'),
    (['--config', 'configs/nope.py'], "--config=configs/nope.py: cannot load the config file ([Errno 2] No such file "
                                      "or directory: 'configs/nope.py')"),
    (['--config', 'configs/nope.py', '--config.batch_size=8'], "cannot load the config file ([Errno 2] No such file"),
    (['--config', f'{CONFIG}:bogus'], "unknown config argument 'bogus'; it knows: quick"),
    (['--bogus=1'], "Unknown command line flag 'bogus' (--helpfull lists the flags)"),
    (['--config', CONFIG, '--config', f'{CONFIG}:quick'], '--config is given 2 times'),
    (['--config', str(REPO / 'configs/fmnist_label_efficiency.py'), '--config.study.inits.rotaton=runs/r'],
     '--config.study.inits.rotaton: did you mean study.inits.rotation?'),
    (['--config.tasks.rot.flip=false'], "add it whole, e.g. --config.tasks.rot=\"{'flip': False}\""),
    (['--config.data.train-limit=5'], 'no such config field: data.train-limit: config keys are Python names'),
    (['--config.evals.knn2.k=5', "--config.evals.knn2={'kind': 'knn'}"],   # the advice was to add it whole
     "--config.evals.knn2 gives that block whole, and its keys cannot be overridden one by one beside it; set k in "
     "it, e.g. --config.evals.knn2=\"{'kind': 'knn', 'k': 5}\""),
    (['--config.evals.knn2.opts.k=5', '--config.evals.knn2={[1]: 2}'],   # no dict given: add it whole, nested
     "the config has no evals.knn2 to set opts.k in; add it whole, e.g. --config.evals.knn2=\"{'opts': {'k': 5}}\""),
], ids=['model', 'dataset', 'mode', 'predict', 'type', 'task-option', 'typo', 'missing-block', 'json-config',
        'no-get-config', 'conv-impl', 'model-option', 'skip-nonfinite', 'no-config-file', 'no-config-file-override',
        'config-argument', 'flag', 'two-configs', 'init-typo', 'whole-block-bool', 'hyphen', 'given-whole',
        'nested-not-a-dict'])
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, args, message):
  """One line on stderr, `error: ...` naming the problem, exit code 2; nothing written. (Cases that give
  --config give the run's.)"""
  workdir = tmp_path / 'run'
  config = [] if '--config' in args else ['--config', CONFIG]
  out = subprocess.run([sys.executable, '-m', 'jaxssl.main', *config, '--workdir', str(workdir), *args],
                       cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], out.stderr[-2000:]
  assert not workdir.exists()


@pytest.mark.parametrize('body, raised', [('return os.environ["JAXSSL_NO_SUCH_VARIABLE"]', "KeyError: 'JAXSSL_NO_SUCH"),
                                          ('return undefined_name', 'NameError'),
                                          ('return (', 'SyntaxError')], ids=['key', 'name', 'syntax'])
def test_a_config_file_that_raises_shows_its_traceback_then_one_line(tmp_path, body, raised):
  """A bug in a user's config file: its traceback (the line to fix), then the one error line, exit 2; not
  'no such config field'."""
  config = tmp_path / 'mine.py'
  config.write_text(f'import os\n\n\ndef get_config():\n  {body}\n')
  out = subprocess.run([sys.executable, '-m', 'jaxssl.main', '--config', str(config), '--workdir',
                        str(tmp_path / 'run')], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 2 and 'Traceback' in out.stderr and str(config) in out.stderr, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1].startswith(f'error: --config={config}: loading it raised {raised}')
  assert not (tmp_path / 'run').exists()


def test_overrides_may_set_options_the_config_leaves_out_then_the_config_is_locked():
  """A task option, a model option, a new evaluator (whole) and a new task (whole), none in the config file: set
  from the command line as the README says, checked by the config check, and the parsed config locked."""
  code = ('import json, sys\n'
          'from absl import flags\n'
          'from jaxssl import cli, main\n'
          'from jaxssl.config_check import check_config\n'
          'cli.parse_flags(sys.argv)\n'
          'c = flags.FLAGS["config"].value\n'
          'check_config(c)\n'
          'try:\n'
          '  c.optim.lrr = 1\n'
          'except AttributeError:\n'
          '  locked = True\n'
          'print(json.dumps([c.tasks.classify.label_smoothing, c.model.options.dtype, c.evals.knn.k, c.tasks.rot.kind, '
          'locked]))\n')
  out = subprocess.run([sys.executable, '-c', code, '--config', CONFIG, '--workdir', '/nonexistent',
                        '--config.tasks.classify.label_smoothing=0.1', '--config.model.options.dtype=bfloat16',
                        "--config.evals.knn={'k': 50, 'feature': 'pool2'}", "--config.tasks.rot={'kind': 'rotation'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == '[0.1, "bfloat16", 50, "rotation", true]'


def test_eval_without_checkpoints_says_what_to_do(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'jaxssl.main', '--config', CONFIG, '--workdir', str(tmp_path),
                        '--mode=eval'], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 2
  assert 'no checkpoints in' in out.stderr and 'train first' in out.stderr


def test_task_options_are_checked_against_the_task_class():
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jaxssl.tasks import check_tasks  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"task 'classify' \(Classification\) has no option\(s\) \['crop'\]; "
                                       r'its options are: .*crop_padding'):
    check_tasks(ml_collections.ConfigDict({'classify': {'crop': 2}}))
  with pytest.raises(ValueError, match="unknown task kind 'rotate'"):
    check_tasks(ml_collections.ConfigDict({'r': {'kind': 'rotate'}}))
  # SimCLR's negatives are the rest of the batch: one image is loss 0, accuracy 1, and nothing learnt.
  with pytest.raises(ValueError, match=r"--config.batch_size=1: task 'simclr' \(SimCLR\) needs a batch of at least 2"):
    check_tasks(ml_collections.ConfigDict({'simclr': {}}), batch_size=1)
  check_tasks(ml_collections.ConfigDict({'simclr': {}, 'rotation': {}}), batch_size=2)
  check_tasks(ml_collections.ConfigDict({'rotation': {}}), batch_size=1)
  # Option values of the wrong type (the command line gives a key the config leaves out as a literal, else a
  # string): one line naming each, before anything is built.
  with pytest.raises(ValueError, match=re.escape("task 'rotation' (Rotation): angles=90 (takes a tuple); "
                                                 "flip='false' (takes bool)")):
    check_tasks(ml_collections.ConfigDict({'rotation': {'flip': 'false', 'angles': 90}}))
  check_tasks(ml_collections.ConfigDict({'classify': {'label_smoothing': 0, 'topk': [1, 2]}}))   # int for float
  from jaxssl.eval.base import check_evals  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=re.escape("evaluator 'knn' (Knn): k='5' (takes int)")):
    check_evals(ml_collections.ConfigDict({'evals': {'knn': {'k': '5', 'at': ('final',)}}}))
