"""The command line: bad input gets one clear error before anything is compiled or written."""

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
    (['--config.optim.lrr=0.1'], 'lrr'),                       # typo: ml_collections suggests 'lr'
    (['--config.batch_size=big'], 'batch_size'),               # ill-typed override
    (['--config.tasks.classify.crop=2'], 'no such config field: crop'),
    (['--config.model.conv_impl=fast'], "unknown conv impl 'fast'; choose one of: auto, xla, im2col"),
    (['--config.model.name=resnet20'], "model 'resnet20' does not take the option(s) ['dropout']"),
    (['--config.optim.skip_nonfinite_steps=-1'], 'skip_nonfinite_steps must be >= 0'),
    (['--config', 'configs/nope.py'], "--config=configs/nope.py: cannot load the config file ([Errno 2] No such file "
                                      "or directory: 'configs/nope.py')"),
    (['--config', 'configs/nope.py', '--config.batch_size=8'], "cannot load the config file ([Errno 2] No such file"),
    (['--config', f'{CONFIG}:bogus'], "unknown config argument 'bogus'; it knows: quick"),
    (['--bogus=1'], "Unknown command line flag 'bogus' (--helpfull lists the flags)"),
], ids=['model', 'dataset', 'mode', 'predict', 'typo', 'type', 'task-option', 'conv-impl', 'model-option',
        'skip-nonfinite', 'no-config-file', 'no-config-file-override', 'config-argument', 'flag'])
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, args, message):
  """One line on stderr, `error: ...` naming the problem, exit code 2; nothing written. (A later --config
  replaces the first.)"""
  workdir = tmp_path / 'run'
  out = subprocess.run([sys.executable, '-m', 'jaxssl.main', '--config', CONFIG, '--workdir', str(workdir), *args],
                       cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], out.stderr[-2000:]
  assert not workdir.exists()


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
