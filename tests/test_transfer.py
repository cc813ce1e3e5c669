"""Transfer: a backbone from another run's checkpoint, frozen or partly trained, on the real Fashion-MNIST."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import small_config
from configs import common
from jaxssl.models import build_backbone
from jaxssl.data import pipeline
from jaxssl.eval import confusion
from jaxssl.tasks.classification import Classification
from jaxssl.train import experiment, loop, optim, transfer
from jaxssl import sharding as mesh_lib
from jaxssl.train.checkpoint import Checkpointer
from jaxssl.train.state import build_model, init_train_state

RESNET = {'model.name': 'resnet20', 'model.options': ml_collections.ConfigDict({'width': 0.25})}


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _save_source(workdir, tfds_dir, seed=1, input_shape=None, **overrides):
  """A source run's checkpoint (step 0) with its own random weights and made-up BatchNorm statistics, so that
  loading it is visible in every array."""
  config = small_config(tfds_dir, seed=seed, **overrides)
  if input_shape is None:
    state = experiment.build_experiment(config).state
  else:
    tasks = [Classification(num_classes=10, mean=0.5, std=0.5)]
    _, state = init_train_state(build_model(config.model, input_shape, tasks, seed), optim.make_optimizer(
        config.optim, 10, 10)[0])
  rng = np.random.default_rng(seed)
  state = state.replace(model_state=jax.tree.map(  # pylint: disable=no-member  # flax.struct dataclass method
      lambda x: jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype), state.model_state))
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), async_save=False)
  ckpt.save(0, state)
  ckpt.close()
  return state


def _backbone(tree):
  return {k: v for k, v in _flat(tree).items() if k.startswith("['backbone']")}


def _abstract_backbone(name, **options):
  return nnx.eval_shape(lambda: build_backbone(name, input_shape=(28, 28, 1), rngs=nnx.Rngs(0), **options))


def test_backbone_layer_order_is_call_order():
  layers = transfer.backbone_layers(_abstract_backbone('cifarnet'), (28, 28, 1))
  assert layers == [(('conv1',),), (('conv2',),), (('fc1',),), (('fc2',),)]
  layers = transfer.backbone_layers(_abstract_backbone('resnet20', width=0.25), (28, 28, 1))
  # stem, 9 blocks of two convs, two projection shortcuts; each conv with its BatchNorm.
  assert len(layers) == 1 + 18 + 2
  assert layers[0] == (('stem_conv',), ('stem_bn',))
  assert layers[1] == (('stages', '0', '0', 'conv1'), ('stages', '0', '0', 'bn1'))
  # The first block of stage 2 projects its input after its two convs.
  assert layers[7:10] == [(('stages', '1', '0', 'conv1'), ('stages', '1', '0', 'bn1')),
                          (('stages', '1', '0', 'conv2'), ('stages', '1', '0', 'bn2')),
                          (('stages', '1', '0', 'shortcut', 'conv'), ('stages', '1', '0', 'shortcut', 'bn'))]
  assert layers[-1] == (('stages', '2', '2', 'conv2'), ('stages', '2', '2', 'bn2'))


def test_zero_backbone_lr_is_a_frozen_backbone_for_the_optimizer():
  task = Classification(num_classes=10, mean=0.5, std=0.5)
  cfg = ml_collections.ConfigDict({'name': 'cifarnet', 'options': {}})  # what build_model reads
  _, params, _ = nnx_split(build_model(cfg, (28, 28, 1), [task], 0))
  grads = jax.tree.map(lambda p: jnp.asarray(np.random.default_rng(0).normal(size=p.shape), p.dtype), params)
  base = dict(name='sgd', lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule='constant')
  updates = {}
  for name, extra in (('zero', {'backbone_lr_scale': 0.0}), ('heads', {'trainable': 'heads'}),
                      ('all', {})):
    tx, _ = optim.make_optimizer(ml_collections.ConfigDict({**common.base_config().optim.to_dict(), **base,
                                                            **extra}), 10, 10)
    state = tx.init(params)
    for _ in range(2):  # the second step has momentum to apply
      u, state = tx.update(grads, state, params)
    updates[name] = _flat(u)
  for k, v in updates['zero'].items():
    np.testing.assert_array_equal(v, updates['heads'][k], err_msg=k)
    if k.startswith("['backbone']"):
      assert not v.any(), k  # exactly zero: no momentum, no weight decay
    else:
      np.testing.assert_array_equal(v, updates['all'][k], err_msg=k)
      assert v.any(), k


_TINY_PARAMS = {  # the optimizer reads only the paths (backbone/..., heads/...) and the shapes
    'backbone': {'conv1': {'kernel': (3, 3, 1, 4), 'bias': (4,)}, 'bn1': {'scale': (4,), 'bias': (4,)}},
    'heads': {'classify': {'dense': {'kernel': (4, 10), 'bias': (10,)}}},
}


@pytest.mark.parametrize('scale', [0.1, 0.5])
@pytest.mark.parametrize('opt', [
    {'name': 'sgd', 'momentum': 0.0, 'nesterov': False, 'weight_decay': 0.0},
    {'name': 'sgd', 'momentum': 0.9, 'nesterov': True, 'weight_decay': 5e-4},   # the fine-tuning recipe
    {'name': 'adam', 'weight_decay': 0.0},
], ids=['sgd', 'sgd_nesterov_wd', 'adam'])
def test_backbone_lr_scale_scales_every_backbone_update(opt, scale):
  """optim.backbone_lr_scale=s: at every step the backbone's update is s times the update the same gradients (and
  parameters) give at scale 1 -- momentum, coupled weight decay and Adam's moments are all linear in the lr --
  while the heads' updates are exactly those at scale 1."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32), _TINY_PARAMS,
                        is_leaf=lambda x: isinstance(x, tuple))
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in range(3)]

  def updates(backbone_lr_scale):
    cfg = ml_collections.ConfigDict({**common.base_config().optim.to_dict(), 'lr': 0.1, 'schedule': 'constant',
                                     'warmup_epochs': 0.0, **opt, 'backbone_lr_scale': backbone_lr_scale})
    tx, _ = optim.make_optimizer(cfg, 10, 10)
    state, out = tx.init(params), []
    for g in grads:  # three steps: the momentum and the moments accumulate
      u, state = tx.update(g, state, params)
      out.append(_flat(u))
    return out

  for step, (scaled, full) in enumerate(zip(updates(scale), updates(1.0))):
    assert scaled.keys() == full.keys()
    for k, u in scaled.items():
      if k.startswith("['backbone']"):
        assert np.abs(u).min() > 0, (step, k)
        np.testing.assert_allclose(u, scale * full[k], rtol=1e-6, atol=0, err_msg=f'step {step} {k}')
      else:
        np.testing.assert_array_equal(u, full[k], err_msg=f'step {step} {k}')


def nnx_split(model):
  from jaxssl.train.state import split_model  # pylint: disable=import-outside-toplevel
  return split_model(model)


def test_init_from_loads_the_source_backbone_exactly(tfds_dir, tmp_path):
  source = _save_source(str(tmp_path / 'src'), tfds_dir, **RESNET)
  fresh = experiment.build_experiment(small_config(tfds_dir, **RESNET))
  exp = experiment.build_experiment(small_config(tfds_dir, init_from=str(tmp_path / 'src'), **RESNET))
  assert exp.init_info['checkpoint'] == str(tmp_path / 'src' / 'checkpoints' / '0')
  for part in ('params', 'model_state'):
    want, got = _backbone(getattr(source, part)), _backbone(getattr(exp.state, part))
    assert want.keys() == got.keys() and want
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
      if part == 'model_state' or 'kernel' in k:  # (biases start at 0 in both)
        assert not np.array_equal(got[k], _backbone(getattr(fresh.state, part))[k]), k
  # Heads are never transferred: the classifier starts as it would from scratch.
  heads = {k: v for k, v in _flat(exp.state.params).items() if k.startswith("['heads']")}
  for k, v in heads.items():
    np.testing.assert_array_equal(v, _flat(fresh.state.params)[k])
  # The optimizer starts from the loaded weights (its state is built after loading).
  assert jax.tree.structure(exp.state.opt_state) == jax.tree.structure(fresh.state.opt_state)


def test_shape_mismatch_and_missing_checkpoint_are_one_clear_error(tfds_dir, tmp_path):
  src = str(tmp_path / 'tiles')
  source = _backbone(_save_source(src, tfds_dir, input_shape=(32, 32, 1)).params)  # CifarNet built for 32x32 inputs
  with pytest.raises(ValueError) as err:
    experiment.build_experiment(small_config(tfds_dir, init_from=src))
  msg = str(err.value)
  assert 'backbone/fc1/kernel' in msg and '(4096, 384)' in msg and '(3136, 384)' in msg
  assert os.path.join(src, 'checkpoints', '0') in msg and 'model built from this config' in msg
  assert 'init_mismatched=skip' in msg
  # init_mismatched='skip': the arrays that fit are copied (the convolutions), fc1 keeps the fresh init.
  fresh = _backbone(experiment.build_experiment(small_config(tfds_dir)).state.params)
  exp = experiment.build_experiment(small_config(tfds_dir, init_from=src, init_mismatched='skip'))
  got = _backbone(exp.state.params)
  assert exp.init_info['not_transferred'] == ['fc1/kernel'] and got.keys() == source.keys() == fresh.keys()
  kernels = [k for k in got if 'kernel' in k]
  assert len(kernels) == 4
  for k in kernels:
    np.testing.assert_array_equal(got[k], fresh[k] if 'fc1' in k else source[k], err_msg=k)
    assert 'fc1' in k or not np.array_equal(got[k], fresh[k]), k
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    experiment.build_experiment(small_config(tfds_dir, init_from=str(tmp_path / 'nowhere')))
  with pytest.raises(FileNotFoundError, match=r'available steps: \[0\]'):
    experiment.build_experiment(small_config(tfds_dir, init_from=src, init_step=5))


def test_probe_needs_a_frozen_task(tfds_dir):
  with pytest.raises(ValueError, match='freeze_backbone=True'):
    experiment.build_experiment(small_config(tfds_dir, **{'optim.trainable': 'heads'}))
  with pytest.raises(ValueError, match='optim.trainable=heads'):
    experiment.build_experiment(small_config(tfds_dir, **{'tasks.classify.freeze_backbone': True}))


def test_linear_probe_freezes_backbone_and_batchnorm(tfds_dir, tmp_path):
  """A linear probe on a resnet's stage-2 map, from another run's backbone: the backbone, BatchNorm
  statistics included, leaves training bit-identical; only the head learns."""
  source = _save_source(str(tmp_path / 'src'), tfds_dir, **RESNET)
  config = small_config(tfds_dir, init_from=str(tmp_path / 'src'), total_steps=3, eval_every=0,
                        checkpoint_every=3, **RESNET, **{
                            'optim.trainable': 'heads', 'tasks.classify.freeze_backbone': True,
                            'tasks.classify.feature': 'stage2', 'tasks.classify.pool': 'avg',
                            'data.eval_limit': 100})
  workdir = str(tmp_path / 'probe')
  summary = loop.train_and_evaluate(config, workdir)
  assert summary['finished']
  with open(os.path.join(workdir, 'init_from.json'), encoding='utf-8') as f:
    assert json.load(f)['checkpoint'] == str(tmp_path / 'src' / 'checkpoints' / '0')
  exp = experiment.build_experiment(config, load_init=False)
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  state, _ = ckpt.restore(3, exp.state, mesh_lib.replicated(exp.mesh))
  ckpt.close()
  for part in ('params', 'model_state'):
    want, got = _backbone(getattr(source, part)), _backbone(getattr(state, part))
    assert want.keys() == got.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=f'{part} {k}')
  # The final eval's per-class accuracy and confusion matrix (exact: 100 test images, padded batches).
  with open(os.path.join(workdir, 'final_metrics.json'), encoding='utf-8') as f:
    final = json.load(f)
  cm = np.loadtxt(os.path.join(workdir, 'confusion.csv'), delimiter=',', skiprows=1,
                  usecols=range(1, 11), dtype=np.int64)
  assert cm.shape == (10, 10) and cm.sum() == 100 and os.path.exists(os.path.join(workdir, 'confusion.png'))
  assert np.trace(cm) / 100 == pytest.approx(final['classify/top1'])
  per_class = final['classify/per_class_top1']
  assert len(per_class) == 10 and cm.sum(axis=1).min() > 0   # the first 100 test images hold every class
  for c, acc in enumerate(per_class.values()):
    assert acc == pytest.approx(cm[c, c] / cm[c].sum())
  head = state.params['heads']['classify']['dense']['kernel'][...]
  assert head.shape == (8, 10)  # avg-pooled stage2 of width 0.25: 32 x 0.25 channels
  assert np.abs(np.asarray(head)).sum() > 0  # zero-initialized, so it learned


def test_per_class_accuracy_worked_by_hand():
  """Rows are true classes: 3 of 4 'a' right, 0 of 2 'b', no 'c' at all (no figure rather than 0)."""
  cm = np.array([[3, 1, 0], [2, 0, 0], [0, 0, 0]])
  assert confusion.per_class_accuracy(cm, ['a', 'b', 'c']) == {'a': 0.75, 'b': 0.0, 'c': None}


def test_finetuning_the_last_layer_changes_only_it(tfds_dir):
  """optim.trainable='last:1' at backbone_lr_scale=0.1 on a ResNet: two steps change the last conv and its
  BatchNorm (scale and bias) and the head, no other parameter by a bit. BatchNorm's running statistics are not
  parameters: the whole backbone runs in training mode, so every layer's statistics follow the batches, the frozen
  layers' included (only trainable='heads' with freeze_backbone, the linear probe, keeps them: see
  test_linear_probe_freezes_backbone_and_batchnorm)."""
  config = small_config(tfds_dir, **RESNET, **{'optim.trainable': 'last:1', 'optim.backbone_lr_scale': 0.1})
  exp = experiment.build_experiment(config)
  before = _flat(jax.device_get(exp.state.params))
  before_stats = _flat(jax.device_get(exp.state.model_state))
  it = pipeline.train_iterator(exp.train_source, exp.tasks, global_batch=config.batch_size, seed=0)
  state = exp.state
  for _ in range(2):  # the head starts at zero: the backbone's first gradient is zero, the second is not
    state, _ = exp.train_step(state, mesh_lib.shard_batch(next(it), exp.mesh), jax.random.PRNGKey(0))
  after = _flat(jax.device_get(state.params))
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  last = "['backbone']['stages'][2][2]"
  assert changed == {f"{last}['conv2']['kernel'].value", f"{last}['bn2']['scale'].value",
                     f"{last}['bn2']['bias'].value", "['heads']['classify']['dense']['kernel'].value",
                     "['heads']['classify']['dense']['bias'].value"}
  after_stats = _flat(jax.device_get(state.model_state))
  assert len(before_stats) == 2 * 21   # mean and var of 21 BatchNorms (19 convs, 2 projections)
  moved = {k for k, v in before_stats.items() if not np.array_equal(v, after_stats[k])}
  assert {f"{last}['bn2']['mean'].value", f"{last}['bn2']['var'].value"} <= moved
  assert moved == set(before_stats)


def test_the_split_metrics_pass_counts_the_confusion_matrices_so_the_split_is_read_once(tfds_dir, tmp_path,
                                                                                         monkeypatch):
  """At the phases the confusion evaluator runs, the split metrics' pass over the eval split also sums its
  matrices: one read of the split, the same matrices as the evaluator's own pass; at other phases (eval) nothing
  is kept, and a kept sum serves only the state it was made for."""
  from jaxssl.eval import base  # pylint: disable=import-outside-toplevel
  config = small_config(tfds_dir, **{'data.eval_limit': 300})
  exp = experiment.build_experiment(config)
  ctx = exp.eval_context(str(tmp_path))
  evaluators = base.build_evaluators(ctx)
  passes = []
  batches = base.EvalContext.batches
  monkeypatch.setattr(base.EvalContext, 'batches', lambda self, *a, **k: passes.append(1) or batches(self, *a, **k))
  final = base.run_phase(evaluators, exp.state, 'final')
  assert len(passes) == 1
  own = confusion.confusion_matrices(ctx, exp.state)['classify']
  np.testing.assert_array_equal(ctx.shared(confusion.SHARED, exp.state)['classify'].round(), own)
  assert own.sum() == 300 and np.trace(own) / 300 == pytest.approx(final['classify/top1'])
  assert list(final['classify/per_class_top1'].values()) == list(
      confusion.per_class_accuracy(own, exp.info.class_names).values())
  other = jax.tree.map(lambda x: x, exp.state)   # the same values in another state object: nothing kept for it
  assert ctx.shared(confusion.SHARED, other) is None
  passes.clear()
  base.run_phase(evaluators, other, 'eval')   # no confusion at 'eval': the metrics' pass keeps nothing
  assert len(passes) == 1 and ctx.shared(confusion.SHARED, other) is None
