"""The online linear probe and k-NN monitor on real Fashion-MNIST: its loss alone on worked values, its gradient
never reaching the backbone and its forward never moving BatchNorm statistics, a rotation run whose pretext numbers
are bit-for-bit those without it, the probe's and the k-NN's accuracy in metrics.jsonl at every evaluation, and the
config switch (off by default, refused without labels, inputs a tile-built backbone can take)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import common, fmnist_jigsaw, fmnist_rotation, fmnist_supervised
from jaxssl.config_check import check_config
from jaxssl.data import datasets, fashion_mnist
from jaxssl.ops.layers import Conv, batch_norm_act
from jaxssl.runlog import read_metrics
from jaxssl.tasks import build_tasks, check_tasks, task_losses
from jaxssl.tasks.online_probe import OnlineProbe, probe_loss
from jaxssl.tasks.rotation import Rotation
from jaxssl.train import loop
from jaxssl.train.state import SSLModel, build_model, merge_model, split_model

STATS = {'mean': (fashion_mnist.MEAN,), 'std': (fashion_mnist.STD,)}


@pytest.fixture(scope='module')
def fmnist(fmnist_source_dir):
  return fashion_mnist.load_arrays('test', fmnist_source_dir)


def test_loss_on_worked_values():
  logits = jnp.array([[np.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 0.0, 0.0]])
  batch = {'label': jnp.array([0, 2, 1]), 'weight': jnp.array([1.0, 1.0, 0.0])}
  loss, m = probe_loss(logits, batch)
  # Row 0: p(0) = 2/4; row 1: uniform over 3; row 2 weighs nothing.
  np.testing.assert_allclose(float(loss), (np.log(2.0) + np.log(3.0)) / 2, rtol=1e-6)
  assert float(m['top1']) == 0.5 and float(m['top5']) == 1.0


def test_transform_reads_labels_and_leaves_unlabelled_rows_out(fmnist):
  images, labels = fmnist
  probe = OnlineProbe(num_classes=10, **STATS)
  out = probe.transform({'image': images[:8], 'label': labels[:8], 'weight': np.ones(8, np.float32)},
                        np.random.default_rng(0), train=True)
  np.testing.assert_array_equal(out['image'], images[:8])          # the records as they are: no augmentation
  np.testing.assert_array_equal(out['label'], labels[:8])
  category = np.array([3, -1, 0, 7])   # DeepFashion: -1 = an image without a category
  out = probe.transform({'image': images[:4], 'category': category, 'weight': np.ones(4, np.float32)},
                        np.random.default_rng(0), train=False)
  np.testing.assert_array_equal(out['weight'], [1, 0, 1, 1])
  np.testing.assert_array_equal(out['label'], [3, 0, 0, 7])
  with pytest.raises(ValueError, match='needs class labels'):
    probe.transform({'image': images[:4], 'weight': np.ones(4, np.float32)}, np.random.default_rng(0), train=True)


# ------------------------------------------------------------------------------ isolation from the backbone


class ConvBatchNorm(nnx.Module):
  """Two conv + BatchNorm + ReLU layers with jaxssl's layers, as the ResNets call them (a ResNet-20 takes ~20 s
  to build and compile on a 2-core CPU, this a second)."""
  feature_names = ('conv1', 'conv2', 'pool')
  output_name = 'pool'

  def __init__(self, *, input_shape, rngs):
    self.conv1 = Conv(input_shape[-1], 8, (3, 3), strides=(2, 2), padding='SAME', use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(8, rngs=rngs)
    self.conv2 = Conv(8, 16, (3, 3), strides=(2, 2), padding='SAME', use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(16, rngs=rngs)

  def __call__(self, x, *, train=False, rng=None):
    del rng
    f = {'conv1': batch_norm_act(self.bn1, self.conv1(x), use_running_average=not train, act='relu')}
    f['conv2'] = batch_norm_act(self.bn2, self.conv2(f['conv1']), use_running_average=not train, act='relu')
    f['pool'] = f['conv2'].mean(axis=(1, 2))
    return f


def test_the_probe_changes_neither_the_backbone_gradient_nor_batchnorm_statistics(fmnist):
  """With BatchNorm, differentiated as the train step does: rotation alone, rotation + probe, probe alone."""
  images, labels = fmnist
  rotation, probe = Rotation(**STATS), OnlineProbe(num_classes=10, **STATS, feature='conv2', pool='avg')

  def build():
    backbone = ConvBatchNorm(input_shape=(28, 28, 1), rngs=nnx.Rngs(0))
    return SSLModel(backbone, {t.name: t.make_head(backbone, (28, 28, 1), nnx.Rngs(1)) for t in (rotation, probe)})
  graphdef, params, model_state = split_model(nnx.jit(build)())
  raw = {'image': images[:16], 'label': labels[:16], 'weight': np.ones(16, np.float32)}
  batch = {t.name: t.transform(raw, np.random.default_rng(1), train=True) for t in (rotation, probe)}
  weights = {'rotation': 1.0, 'probe': 1.0}
  key = jax.random.PRNGKey(0)

  def grads_of(tasks):
    def loss_fn(p):
      model = merge_model(graphdef, p, model_state)
      loss, metrics = task_losses(model, tasks, weights, batch, train=True, rng=key)
      return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))
    return jax.jit(jax.grad(loss_fn, has_aux=True))(params)

  g_off, (m_off, state_off) = grads_of([rotation])
  g_on, (m_on, state_on) = grads_of([rotation, probe])
  g_probe, (_, state_probe) = grads_of([probe])
  leaves = lambda tree: jax.tree.leaves(jax.device_get(tree))   # pylint: disable=unnecessary-lambda-assignment
  # The backbone's gradient, bit for bit, and exactly zero from the probe alone.
  for a, b in zip(leaves(g_off['backbone']), leaves(g_on['backbone'])):
    np.testing.assert_array_equal(a, b)
  assert all(not np.any(x) for x in leaves(g_probe['backbone']))
  assert any(np.any(x) for x in leaves(g_on['heads']['probe']))   # while the probe's own head learns
  # BatchNorm statistics: the probe's forward runs in inference mode and moves none of them; rotation's moves them
  # exactly as without the probe.
  for a, b in zip(leaves(state_off), leaves(state_on)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(leaves(state_probe), leaves(model_state)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(state_on), leaves(model_state)))
  for k, v in m_off.items():
    np.testing.assert_array_equal(np.asarray(v[0]), np.asarray(m_on[k][0]))


def test_a_rotation_run_is_unchanged_by_the_probe_which_reports_at_every_evaluation(tfds_dir, tmp_path):
  def run(enabled):
    config = fmnist_rotation.get_config('quick')
    config.data.data_dir = tfds_dir
    config.data.train_limit, config.data.eval_limit = 256, 100
    config.update({'batch_size': 32, 'eval_batch_size': 100, 'total_steps': 4, 'eval_every': 2,
                   'checkpoint_every': 4, 'log_every': 1})
    config.online_probe.enabled = enabled
    workdir = str(tmp_path / ('on' if enabled else 'off'))
    summary = loop.train_and_evaluate(config, workdir)
    assert summary['finished']
    return read_metrics(workdir)

  def by_row(rows):   # an evaluation writes one row per logged evaluator: merge them
    out = {}
    for r in rows:
      out.setdefault((r['step'], r['split']), {}).update(r)
    return out

  off, on = by_row(run(False)), by_row(run(True))
  assert list(off) == list(on)
  for row, a in off.items():
    b = on[row]
    for key, value in a.items():
      if key.startswith('rotation/') or key in ('lr', 'epoch'):
        assert value == b[key], (row, key, value, b[key])   # bit for bit
    assert not any(k.startswith('probe/') for k in a)
  evals = [r for (_, split), r in on.items() if split == 'test']
  assert [r['step'] for r in evals] == [2, 4]                  # at the evaluation and at the end
  for r in evals:
    assert 0.1 <= r['probe/top1'] <= 1.0 and 0.1 <= r['probe/knn_top1'] <= 1.0, r
    assert r['probe/top5'] >= r['probe/top1'] and r['probe/knn_top5'] >= r['probe/knn_top1']
  assert all('probe/top1' in r for (_, split), r in on.items() if split == 'train')   # a training curve too


# ------------------------------------------------------------------------------------------- the switch


def test_the_switch_is_off_by_default_and_on_for_the_pretext_configs():
  info = datasets.get_dataset('fashion_mnist')
  assert not common.base_config().online_probe.enabled
  config = fmnist_supervised.get_config()
  tasks, _ = build_tasks(config.tasks, info, config.online_probe)
  assert [t.name for t in tasks] == ['classify']
  config = fmnist_rotation.get_config()
  tasks, weights = build_tasks(config.tasks, info, config.online_probe)
  assert [t.name for t in tasks] == ['rotation', 'probe'] and weights['probe'] == 1.0   # last: no draw moves
  assert tasks[1].feature == 'pool2' and tasks[1].freeze_backbone and tasks[1].evaluators() == ('online_knn',)
  config.online_probe.enabled = False
  assert [t.name for t in build_tasks(config.tasks, info, config.online_probe)[0]] == ['rotation']


def test_the_switch_is_checked_with_one_line():
  config = fmnist_rotation.get_config()
  with config.unlocked():
    config.online_probe.pool = 'max'
  with pytest.raises(ValueError, match="task 'probe': unknown pool 'max'"):
    check_config(config)
  config = fmnist_rotation.get_config()
  with config.unlocked():
    config.tasks.probe = ml_collections.ConfigDict({'kind': 'rotation'})
  with pytest.raises(ValueError, match="already has one"):
    check_tasks(config.tasks, config.online_probe)
  # A dataset without classes (the DeepFashion attribute sample) cannot have it: one line with the fix.
  unlabelled = datasets.DatasetInfo('x', (28, 28, 1), (), (0.5,), (0.25,), ('train',), load=None)
  with pytest.raises(ValueError, match='no class labels.*online_probe.enabled=false'):
    build_tasks(fmnist_rotation.get_config().tasks, unlabelled, fmnist_rotation.get_config().online_probe)


@pytest.mark.parametrize('variant', ['2x2_perm', '3x3_perm', '2x2_coords', '3x3_coords'])
def test_a_backbone_built_for_jigsaw_tiles_is_probed_on_what_it_takes(variant):
  config = fmnist_jigsaw.get_config(variant)
  info = datasets.get_dataset('fashion_mnist')
  tasks, _ = build_tasks(config.tasks, info, config.online_probe)
  model = nnx.eval_shape(lambda: build_model(config.model, info.input_shape, tasks, 0))
  probe = tasks[-1]
  tile = tasks[0].backbone_input_shape(info.input_shape)
  assert probe.input_shape(info.input_shape) == tile            # tiles of the jigsaw's size, or its 24 x 24 layout
  per_input = 64 * int(np.prod([-(-s // 4) for s in tile[:2]]))  # CifarNet pool2: two stride-2 pools, 64 channels
  assert model.heads['probe'].dense.kernel.shape == (per_input * max(1, probe.tiles) ** 2, 10)
  out = jax.eval_shape(lambda m: probe.embed(m.backbone, jnp.zeros((2, 28, 28, 1), jnp.uint8)), model)
  assert out.shape == (2, per_input * max(1, probe.tiles) ** 2)
