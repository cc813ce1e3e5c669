"""The README's "Extending jaxssl" promises, kept: a task is one class plus one registry line, an evaluator one
class plus a config entry, and neither touches the trainer. Both below are defined here, outside jaxssl."""

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import small_config
from jaxssl import tasks as tasks_lib
from jaxssl.config_check import check_config
from jaxssl.eval import base as eval_base
from jaxssl.eval.base import Evaluator
from jaxssl.tasks.base import LinearHead, Task, head_input, normalize, weighted_mean
from jaxssl.train import loop


@dataclasses.dataclass
class FlipPrediction(Task):
  """A pretext task: was the image mirrored left-right? (Labels made from the images alone.)"""
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'flip'
  feature: str = ''

  def transform(self, batch, rng, *, train):
    flipped = rng.random(len(batch['image'])) < 0.5
    images = np.where(flipped[:, None, None, None], batch['image'][:, :, ::-1], batch['image'])
    return {'image': images, 'label': flipped.astype(np.int32), 'weight': batch['weight']}

  def make_head(self, backbone, input_shape, rngs):
    feature, in_features, _ = head_input(backbone, input_shape, self.feature, self.name)
    return LinearHead(in_features, 2, feature=feature, rngs=rngs)

  def forward(self, backbone, head, batch, *, train, rng):
    return head(backbone(normalize(batch['image'], self.mean, self.std), train=train, rng=rng))

  def loss(self, logits, batch):
    labels, weight = batch['label'], batch['weight']
    loss = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), weight)
    return loss, {'loss': loss, 'acc': weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weight)}


@dataclasses.dataclass
class ImageCount(Evaluator):
  """An evaluator: counts the eval split's real images with one compiled pass, writes them to a file."""
  at: tuple[str, ...] = ('eval', 'final')
  filename: str = 'image_count.json'

  def __post_init__(self):
    task = self.ctx.tasks[0]
    self._count = self.ctx.compile(lambda model, batch: batch[task.name]['weight'].sum())

  def run(self, state, phase):
    n = int(self.ctx.accumulate(self._count, state, self.ctx.batches()))
    with open(os.path.join(self.ctx.workdir, self.filename), 'a', encoding='utf-8') as f:
      f.write(json.dumps({'step': int(state.step), 'phase': phase, 'images': n}) + '\n')
    return {'image_count': n}


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(tasks_lib.TASKS, 'flip', f'{__name__}:FlipPrediction')   # the one registry line


def test_a_new_task_and_evaluator_train_without_touching_the_trainer(
    tmp_path, tfds_dir, registered):  # pylint: disable=unused-argument  # registers the 'flip' task
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = small_config(tfds_dir, total_steps=8, eval_every=4)
  config.tasks = ml_collections.ConfigDict({'flip': {}})
  config.evals = ml_collections.ConfigDict({'count': {'type': f'{__name__}:ImageCount'}})
  check_config(config)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['finished'] and 0.0 <= result['eval']['flip/acc'] <= 1.0
  assert result['eval']['image_count'] == 300                     # eval_limit: every real image counted once
  rows = [json.loads(line) for line in (tmp_path / 'image_count.json').read_text().splitlines()]
  assert [(r['step'], r['phase']) for r in rows] == [(4, 'eval'), (8, 'final')]
  assert json.loads((tmp_path / 'final_metrics.json').read_text())['image_count'] == 300


def test_a_task_by_module_path_needs_no_registry_line(tfds_dir):
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = small_config(tfds_dir)
  config.tasks = ml_collections.ConfigDict({'flip': {'kind': f'{__name__}:FlipPrediction'}})
  check_config(config)


def test_bad_extensions_are_one_clear_line(tfds_dir, registered):  # pylint: disable=unused-argument  # registers 'flip'
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = small_config(tfds_dir)
  config.evals = ml_collections.ConfigDict({'count': {'type': f'{__name__}:ImageCount', 'bins': 3}})
  with pytest.raises(ValueError, match=r"evaluator 'count' \(ImageCount\) has no option\(s\) \['bins'\]"):
    check_config(config)
  config.evals = ml_collections.ConfigDict({'count': {'type': f'{__name__}:ImageCount', 'at': ['sometimes']}})
  with pytest.raises(ValueError, match=r"unknown phase\(s\) \['sometimes'\]"):
    check_config(config)
  config.evals = ml_collections.ConfigDict({'nope': {}})
  with pytest.raises(ValueError, match="unknown evaluator 'nope'"):
    check_config(config)
  with pytest.raises(ValueError, match='is not a dataclass subclass of jaxssl.tasks.base.Task'):
    tasks_lib.task_class(f'{__name__}:ImageCount')


def test_default_evaluators_come_from_the_tasks(tfds_dir):
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = small_config(tfds_dir)
  info = type('Info', (), {'num_classes': 10, 'mean': (0.3,), 'std': (0.3,), 'attribute_names': (),
                           'attribute_frequency': ()})()
  built, _ = tasks_lib.build_tasks(config.tasks, info)
  assert list(eval_base._entries(config, built)) == ['metrics', 'confusion', 'filters', 'curves']  # pylint: disable=protected-access
  config.tasks.classify.freeze_backbone = True
  config.evals = ml_collections.ConfigDict({'filters': {'enabled': False}, 'knn': {'k': 5}})
  built, _ = tasks_lib.build_tasks(config.tasks, info)
  entries = eval_base._entries(config, built)  # pylint: disable=protected-access
  assert list(entries) == ['metrics', 'confusion', 'embedding', 'curves', 'knn']
  assert entries['knn'] == {'type': 'knn', 'k': 5}


def test_metric_pairs_make_exact_split_means():
  """A metric over other examples than the batch's (a (total, count) pair) stays exact when summed."""
  from jaxssl.tasks.base import as_pair, mean_of  # pylint: disable=import-outside-toplevel
  values, w = jnp.asarray([1.0, 0.0, 1.0, 1.0]), jnp.asarray([1.0, 1.0, 0.0, 0.0])
  total, count = mean_of(values, w)
  assert (float(total), float(count)) == (1.0, 2.0)
  assert as_pair((total, count), jnp.asarray(4.0)) == (total, count)
  assert [float(x) for x in as_pair(jnp.asarray(0.25), jnp.asarray(4.0))] == [1.0, 4.0]


@dataclasses.dataclass
class FailsAtTheEnd(Evaluator):
  """An evaluator that breaks (a full disk under its picture, say) after the last step."""
  at: tuple[str, ...] = ('final',)

  def run(self, state, phase):
    raise RuntimeError('picture writer broke')


def test_a_failing_final_evaluator_costs_no_training_steps(tmp_path, tfds_dir):
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jaxssl.train.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  config = small_config(tfds_dir, total_steps=6, checkpoint_every=4, eval_every=0)
  config.evals = ml_collections.ConfigDict({'fails': {'type': f'{__name__}:FailsAtTheEnd'}})
  with pytest.raises(RuntimeError, match='picture writer broke'):
    loop.train_and_evaluate(config, str(tmp_path))
  ckpt = Checkpointer(str(tmp_path / 'checkpoints'), read_only=True)
  assert ckpt.latest_step() == 6     # saved before the final evaluation, not only step 4
  ckpt.close()


def test_knn_options_are_checked_when_the_run_is_built():
  from jaxssl.eval.knn import Knn  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="unknown k-NN pool 'max'"):
    Knn(ctx=None, pool='max')
