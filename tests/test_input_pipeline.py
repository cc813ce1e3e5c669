"""Input settings that fit the machine, a data position that resumes with any number of workers, the loop's
measure of time spent waiting for input, and the bench's input figures (real Fashion-MNIST images)."""

import json

import ml_collections
import numpy as np
import pytest

from conftest import small_config
from jaxssl.config_check import check_config
from jaxssl.data import fashion_mnist, pipeline
from jaxssl.tasks.classification import Classification
from jaxssl.train import checkpoint as ckpt_lib, loop


@pytest.fixture(scope='module')
def records(fmnist_source_dir):
  images, labels = fashion_mnist.load_arrays('test', fmnist_source_dir)
  return [{'image': images[i], 'label': int(labels[i]), 'index': i} for i in range(640)]


def _task():
  return Classification(num_classes=10, mean=0.286, std=0.353, crop_padding=2, flip=True)


def test_auto_keeps_a_cpu_for_the_step_and_gives_an_accelerator_host_its_cores():
  for cores in (1, 2, 64):
    assert pipeline.auto_settings(cores, 'cpu') == (0, 1, 4)
  assert pipeline.auto_settings(16, 'gpu') == (14, 2, 2)
  assert pipeline.auto_settings(96, 'tpu') == (16, 2, 2)      # capped: the main process unpickles every batch
  assert pipeline.auto_settings(2, 'gpu') == (0, 2, 8)        # no core to spare: threads in the training process


def test_input_settings_resolve_auto_and_keep_what_is_set():
  data = ml_collections.ConfigDict({'num_workers': -1, 'read_threads': -1, 'prefetch_batches': -1})
  auto = pipeline.input_settings(data, cores=16, backend='gpu')
  assert auto.options() == {'num_workers': 14, 'read_threads': 2, 'prefetch_batches': 2,
                           'decoded_cache': True}
  assert auto.line() == 'input: 14 workers x 2 threads, prefetch 2, decoded-image cache (auto: 16 cores, gpu)'
  data.num_workers = 3
  mixed = pipeline.input_settings(data, cores=16, backend='gpu')
  assert mixed.options() == {'num_workers': 3, 'read_threads': 2, 'prefetch_batches': 2, 'decoded_cache': True}
  assert mixed.line().endswith('(auto read_threads, prefetch_batches: 16 cores, gpu)')
  fixed = pipeline.input_settings(ml_collections.ConfigDict({'num_workers': 0, 'read_threads': 1,
                                                             'prefetch_batches': 4}), cores=16, backend='gpu')
  assert fixed.line() == 'input: 0 workers x 1 thread, prefetch 4, decoded-image cache (as set)'
  # This test process runs on the CPU: auto (and absent keys) are the CPU's settings.
  assert pipeline.iterator_options(ml_collections.ConfigDict({})) == {
      'num_workers': 0, 'read_threads': 1, 'prefetch_batches': 4, 'decoded_cache': False}
  assert 1 <= pipeline.machine_cores()


def test_config_takes_auto_and_refuses_other_negatives(tfds_dir):
  config = small_config(tfds_dir)
  assert config.data.num_workers == config.data.read_threads == config.data.prefetch_batches == -1  # the default
  check_config(config)
  config.data.read_threads = -2
  with pytest.raises(ValueError, match=r'read_threads=-2 must be >= 0 .*-1 for auto'):
    check_config(config)


def test_position_converts_between_worker_counts():
  for workers in (0, 1, 2, 3, 5):
    for position in range(12):
      state = pipeline.state_at(position, workers)
      assert pipeline.position_of(state) == position
  assert pipeline.state_at(5, 2)['iterators_in_use_states'] == [{'next_index': 3}, {'next_index': 2}]
  with pytest.raises(KeyError):
    pipeline.position_of({'something': 1})
  with pytest.raises(TypeError, match='not a grain iterator position'):
    pipeline.position_of({'next_index': '3'})


def test_a_position_saved_with_workers_resumes_without_them_and_back(records):
  """A run checkpointed on a machine where 'auto' chose 2 workers resumes on one where it chooses 0, and the
  other way, with the very batches it would have had; a state in grain's own worker format (checkpoints of
  earlier versions) too."""
  kw = dict(global_batch=64, seed=3)
  single = pipeline.train_iterator(records, [_task()], **kw)
  expected = [next(single)['classify']['image'] for _ in range(14)]   # 10 batches an epoch: crosses one
  workers = pipeline.train_iterator(records, [_task()], num_workers=2, **kw)
  try:
    for _ in range(3):
      next(workers)
    state = workers.get_state()
    legacy = workers._parent.get_state()  # pylint: disable=protected-access  # grain's own, as saved before
    assert state == {'next_index': 3} and pipeline.position_of(legacy) == 3
    np.testing.assert_array_equal(next(workers)['classify']['image'], expected[3])
  finally:
    workers.close()
  for saved in (state, legacy):
    resumed = pipeline.train_iterator(records, [_task()], **kw)
    resumed.set_state(json.loads(json.dumps(saved)))     # as the checkpoint stores it
    for want in expected[3:]:
      np.testing.assert_array_equal(next(resumed)['classify']['image'], want)
  back = pipeline.train_iterator(records, [_task()], num_workers=2, **kw)
  try:
    back.set_state({'next_index': 9})
    for want in expected[9:12]:
      np.testing.assert_array_equal(next(back)['classify']['image'], want)
  finally:
    back.close()


def test_the_data_fingerprint_ignores_the_worker_count():
  """Older checkpoints recorded num_workers in their data fingerprint; it changes no batch, so it is ignored."""
  data = ml_collections.ConfigDict({'name': 'fashion_mnist', 'train_split': 'train', 'train_fraction': 1.0,
                                    'subset_seed': 0, 'num_workers': -1})
  fingerprint = ckpt_lib.data_fingerprint(data, 100, seed=0, batch_size=8)
  assert 'num_workers' not in fingerprint
  ckpt_lib.check_data_position('ckpt/4', {'data': {**fingerprint, 'num_workers': 2}}, fingerprint,
                               {'next_index': 4}, 4)
  with pytest.raises(ckpt_lib.CheckpointError, match='seed 1 there'):
    ckpt_lib.check_data_position('ckpt/4', {'data': {**fingerprint, 'seed': 1}}, fingerprint, {'next_index': 4}, 4)
  with pytest.raises(ckpt_lib.CheckpointError, match='at batch 5'):
    ckpt_lib.check_data_position('ckpt/4', {'data': fingerprint}, fingerprint, {'next_index': 5}, 4)


def test_a_resume_with_other_pixels_is_refused_but_old_checkpoints_still_resume():
  """normalize, image_size, resize, ... change the records, not their number: the fingerprint holds them."""
  from configs import common  # pylint: disable=import-outside-toplevel
  data = common.data_config('image_folder')
  fingerprint = ckpt_lib.data_fingerprint(data, 100, seed=0, batch_size=8)
  other = data.copy_and_resolve_references()
  other.normalize, other.resize = 'imagenet', 'squash'
  with pytest.raises(ckpt_lib.CheckpointError, match=r"data.normalize 'dataset' there, 'imagenet' here, "
                                                     r"data.resize 'crop' there, 'squash' here"):
    ckpt_lib.check_data_position('ckpt/4', {'data': fingerprint}, ckpt_lib.data_fingerprint(other, 100, seed=0,
                                                                                            batch_size=8),
                                 {'next_index': 4}, 4)
  saved_before = {k: v for k, v in fingerprint.items() if k != 'content'}   # a checkpoint from before the field
  ckpt_lib.check_data_position('ckpt/4', {'data': saved_before}, fingerprint, {'next_index': 4}, 4)


class _Pending:
  """A device array whose computation is (not) done."""

  def __init__(self, ready):
    self.ready = ready

  def is_ready(self):
    return self.ready


class _Clock:

  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def test_input_wait_is_the_share_of_the_interval_spent_in_next():
  clock = _Clock()
  settings = pipeline.input_settings(ml_collections.ConfigDict({}), cores=2, backend='cpu')
  waits = loop._InputWait(settings, clock=clock)  # pylint: disable=protected-access
  assert waits.interval(1) is None and waits.summary() is None     # before the first step: nothing measured
  waits.start()
  for _ in range(10):       # a pipeline that keeps up: 1 ms of 100 ms per step
    with waits.waiting():
      clock.t += 0.001
    clock.t += 0.099
  with waits.paused():      # an evaluation: not part of the interval
    clock.t += 5.0
  assert waits.interval(10) is None
  assert waits.shares == [(10, pytest.approx(0.01))]
  for _ in range(10):       # an input-bound one: 60 ms of 100
    with waits.waiting():
      clock.t += 0.06
    clock.t += 0.04
  line = waits.interval(20)
  assert line.startswith('warning: input-bound: input_wait=60% ') and 'raise --config.data.num_workers' in line
  assert '0 workers x 1 thread, prefetch 4 on 2 cores' in line
  for _ in range(10):
    with waits.waiting():
      clock.t += 0.08
    clock.t += 0.02
  assert waits.interval(30) is None            # said once
  for ready in (False, True):                  # a wait while the device still runs the last step costs nothing
    with waits.waiting({'loss': _Pending(ready)}):
      clock.t += 0.05
  assert waits.interval(31) is None and waits.shares[-1] == (31, pytest.approx(0.5))
  assert waits.summary() == 'input_wait=47% of the training time (worst interval 80%, up to step 30)'  # 1.46 s of 3.1


def test_a_run_logs_its_input_settings_and_its_wait(tfds_dir, tmp_path, capsys):
  """The run's log names the resolved input settings and ends training with the share of time it waited for
  input; a checkpoint saved with 2 workers resumes with 'auto' (0 on this CPU) to the uninterrupted run's figures."""
  config = small_config(tfds_dir, total_steps=4, eval_every=0, checkpoint_every=2, log_every=2,
                        **{'data.eval_limit': 128})
  reference = loop.train_and_evaluate(config, str(tmp_path / 'ref'))
  out = capsys.readouterr().out
  assert 'input: 0 workers x 1 thread, prefetch 4 (auto: ' in out and ' cpu)' in out
  (summary,) = [line for line in out.splitlines() if line.startswith('input_wait=')]
  share = float(summary.split('=')[1].split('%')[0])
  assert 0 <= share <= 100
  config.data.num_workers = 2
  first = loop.train_and_evaluate(config, str(tmp_path / 'run'), stop_after=2)
  assert not first['finished']
  assert 'input: 2 workers x 1 thread, prefetch 4 (auto read_threads, prefetch_batches: ' in capsys.readouterr().out
  config.data.num_workers = -1
  second = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert second['finished'] and second['eval'] == reference['eval']
