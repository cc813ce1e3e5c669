"""Backbones: feature shapes, parameter counts and trees, BatchNorm statistics, dropout, graphdefs."""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxssl import ops
from jaxssl.models import BACKBONES, ResNet, build_backbone, feature_shapes
from jaxssl.models.resnet import Bottleneck
from jaxssl.ops.layers import Conv

# Small configs so a real forward pass is cheap on CPU. On CPU the cost is mostly XLA
# compiles (one per distinct init shape, one per jitted forward), so configs share shapes.
SMALL = [
    ('cifarnet', (28, 28, 1), {'dropout': 0.5}),
    ('cifarnet', (32, 32, 3), {}),
    ('resnet20', (32, 32, 3), {}),
    ('resnet18_cifar', (28, 28, 1), {'width': 0.25}),
    ('resnet18', (28, 28, 1), {'width': 0.25}),
    # resnet50's blocks (bottlenecks, the ImageNet stem), one a stage: its depth is pinned abstractly below
    ('ResNet', (28, 28, 1), {'block': Bottleneck, 'stage_sizes': (1, 1, 1, 1), 'width': 0.25}),
]


@functools.lru_cache(maxsize=None)
def _built(name, input_shape, opts):
  make = ResNet if name == 'ResNet' else functools.partial(build_backbone, name)
  return make(input_shape=input_shape, rngs=nnx.Rngs(0), **dict(opts))


def built(name, input_shape, **opts):
  """A fresh copy of a cached model: eager init compiles per shape, so build each once."""
  return nnx.clone(_built(name, input_shape, tuple(sorted(opts.items()))))


def jit_forward(model, x, train=False):
  """One compile for the whole net instead of one per eager op; BN updates are kept."""
  return nnx.jit(lambda m, x: m(x, train=train))(model, x)


def n_params(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract(name, input_shape, **opts):
  return nnx.eval_shape(lambda: build_backbone(name, input_shape=input_shape,
                                               rngs=nnx.Rngs(0), **opts))


def batch(input_shape, b=2, seed=0):
  return jax.random.normal(jax.random.key(seed), (b, *input_shape))


@pytest.mark.parametrize('name,input_shape,opts', SMALL)
def test_features_match_predicted_shapes(name, input_shape, opts):
  model = built(name, input_shape, **opts)
  shapes = feature_shapes(model, input_shape)
  out = jit_forward(model, batch(input_shape, b=3))
  # (jit returns dicts key-sorted; eager order is checked in the tests below)
  assert set(out) == set(model.feature_names) and tuple(shapes) == model.feature_names
  for k, v in out.items():
    assert v.shape == (3, *shapes[k]), k
  assert out[model.output_name].ndim == 2
  assert np.all(np.isfinite(out[model.output_name]))


def test_cifarnet_param_count():
  expected = (5 * 5 * 3 * 64 + 64) + (5 * 5 * 64 * 64 + 64) + (8 * 8 * 64 * 384 + 384) + (384 * 192 + 192)
  assert n_params(abstract('cifarnet', (32, 32, 3))) == expected
  assert feature_shapes(abstract('cifarnet', (28, 28, 1)), (28, 28, 1))['pool2'] == (7, 7, 64)


# Exact counts of trainable parameters (BatchNorm's running statistics are not parameters; jaxssl's backbones have
# no classifier). Each is derived from a published figure, so a missing or extra layer (even one BatchNorm) fails.
_TORCHVISION_FC = {'resnet18': 512 * 1000 + 1000, 'resnet50': 2048 * 1000 + 1000}


@pytest.mark.parametrize('name,expected', [
    # He et al. 2016's ResNet-20 with zero-padding shortcuts: 269,722 with its 64x10 + 10 classifier; jaxssl
    # projects instead (1x1 conv + BatchNorm) in the first block of stages 2 and 3: 16x32 + 2x32, 32x64 + 2x64.
    ('resnet20', 269_722 - 650 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)),
    ('resnet18', 11_689_512 - _TORCHVISION_FC['resnet18']),    # torchvision's resnet18 less its fc
    ('resnet50', 25_557_032 - _TORCHVISION_FC['resnet50']),    # torchvision's resnet50 less its fc
    # The CIFAR stem: one 3x3 conv (3x3x3x64) in place of the 7x7 (7x7x3x64), no max pool (no parameters).
    ('resnet18_cifar', 11_689_512 - _TORCHVISION_FC['resnet18'] - (7 * 7 - 3 * 3) * 3 * 64),
])
def test_resnet_param_counts(name, expected):
  shape = (32, 32, 3) if name in ('resnet20', 'resnet18_cifar') else (224, 224, 3)
  model = abstract(name, shape)
  assert n_params(model) == expected
  if name == 'resnet50':
    assert feature_shapes(model, shape) == {
        'stem': (56, 56, 64), 'stage1': (56, 56, 256), 'stage2': (28, 28, 512),
        'stage3': (14, 14, 1024), 'stage4': (7, 7, 2048), 'pool': (2048,)}


def test_batchstats_update_only_in_train_mode():
  model = built('resnet20', (32, 32, 3))
  x = batch((32, 32, 3), b=4)
  # nnx.state holds the live Variables, so snapshot the values.
  def stats():
    return jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))

  before = stats()
  model(x, train=False)
  jax.tree.map(np.testing.assert_array_equal, before, stats())
  model(x, train=True)
  diffs = jax.tree.map(lambda a, b: np.abs(a - b).max(), before, stats())
  assert len(jax.tree.leaves(diffs)) == 2 * 21  # mean+var for 19 convs + 2 projections
  assert all(d > 0 for d in jax.tree.leaves(diffs))


def test_eval_deterministic_and_dropout_uses_rng():
  model = built('cifarnet', (28, 28, 1), dropout=0.5)
  x = batch((28, 28, 1))
  assert tuple(model(x)) == model.feature_names
  np.testing.assert_array_equal(model(x)['fc2'], model(x)['fc2'])
  a = model(x, train=True, rng=jax.random.key(1))['fc2']
  b = model(x, train=True, rng=jax.random.key(2))['fc2']
  c = model(x, train=True, rng=jax.random.key(1))['fc2']
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, c)
  with pytest.raises(ValueError, match='rng'):
    model(x, train=True)


def test_split_merge_inside_jit():
  model = built('resnet20', (32, 32, 3))
  eager = nnx.clone(model)
  x = batch((32, 32, 3), b=4)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def step(params, rest, x):
    m = nnx.merge(graphdef, params, rest)
    out = m(x, train=True)
    return out, nnx.state(m, nnx.BatchStat), m(x, train=False)

  out, stats, evl = step(params, rest, x)
  ref = eager(x, train=True)
  assert tuple(ref) == model.feature_names
  for k in ref:
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               stats, nnx.state(eager, nnx.BatchStat))
  np.testing.assert_allclose(evl['pool'], eager(x)['pool'], rtol=1e-4, atol=1e-5)


def test_unknown_name_lists_choices():
  with pytest.raises(ValueError) as e:
    build_backbone('vgg', input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
  assert "unknown model 'vgg'" in str(e.value)
  for name in BACKBONES:
    assert name in str(e.value)


@pytest.mark.parametrize('name,opts', [('cifarnet', {'dtype': 'bfloat16'}),  # as a config gives it
                                       ('resnet18_cifar', {'width': 0.25, 'dtype': jnp.bfloat16})])
def test_bf16_compute_float32_params(name, opts):
  model = built(name, (28, 28, 1), **opts)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  out = jit_forward(model, batch((28, 28, 1)), train=True)
  assert all(v.dtype == jnp.bfloat16 for v in out.values())
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))


# The state of every backbone as it was when they were built with nnx.Conv (before jaxssl.ops.layers.Conv): leaf
# count and sha256 (first 16 hex digits) of its lines 'path Variable-type shape dtype'. Checkpoints name and shape
# their arrays by this tree, so a layer change must leave it exactly as it was.
STATE_TREES = [
    ('cifarnet', (28, 28, 1), {}, 8, 'ace932aa6f9a9cbf'),
    ('alexnet', (67, 67, 3), {'width': 0.125, 'fc_width': 8}, 14, '59f5d14e78b99f2d'),
    ('alexnet', (67, 67, 3), {'width': 0.125, 'fc_width': 8, 'norm': 'batch'}, 34, 'a5bb57de61ad770d'),
    ('resnet20', (32, 32, 3), {}, 105, '3892128a81236237'),
    ('resnet18_cifar', (32, 32, 3), {}, 100, '15af1d6d993b6090'),
    ('resnet18', (64, 64, 3), {}, 100, '9ebf0bfe43dd5b57'),
    ('resnet50', (64, 64, 3), {}, 265, '55a8f6b408164fc6'),
]


@pytest.mark.parametrize('name,input_shape,opts,n_leaves,digest', STATE_TREES)
def test_state_trees_are_those_of_the_nnx_conv_backbones(name, input_shape, opts, n_leaves, digest):
  lines = [f"{'/'.join(map(str, path))} {type(v).__name__} {tuple(v.shape)} {v.dtype}"
           for path, v in nnx.to_flat_state(nnx.state(abstract(name, input_shape, **opts)))]
  assert (len(lines), hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:16]) == (n_leaves, digest), \
      '\n'.join(lines)


@pytest.mark.parametrize('args,kwargs', [
    ((3, 8, (5, 5)), {'padding': 'SAME'}),
    ((4, 6, (3, 3), 2), {'padding': ((1, 1), (1, 1)), 'use_bias': False, 'dtype': jnp.bfloat16}),
    ((2, 5, (1, 1)), {'kernel_init': nnx.initializers.he_normal(), 'bias_init': nnx.initializers.ones_init()}),
])
def test_the_plain_conv_layer_is_an_nnx_conv(args, kwargs):
  """The same parameters (paths, shapes, dtypes, initial values) as nnx.Conv from the same arguments and seed, and
  the same output on the 'xla' path."""
  ours, theirs = Conv(*args, rngs=nnx.Rngs(3), **kwargs), nnx.Conv(*args, rngs=nnx.Rngs(3), **kwargs)
  assert isinstance(ours, nnx.Conv)
  a, b = nnx.to_flat_state(nnx.state(ours)), nnx.to_flat_state(nnx.state(theirs))
  assert [(p, type(v), v.shape, v.dtype) for p, v in a] == [(p, type(v), v.shape, v.dtype) for p, v in b]
  for (_, v), (_, w) in zip(a, b):
    np.testing.assert_array_equal(v[...], w[...])
  x = batch((9, 9, args[0]), b=2)
  with ops.use_impl('xla'):
    np.testing.assert_array_equal(ours(x), theirs(x))


def test_graphdefs_of_equal_backbones_compare_equal():
  """Two backbones of one shape share a graphdef (the layers hold one module-level convolution function, not a
  closure per model), so nnx.jit traces a forward once for both."""
  for name, input_shape in (('cifarnet', (28, 28, 1)), ('resnet20', (32, 32, 3))):
    first, second = (build_backbone(name, input_shape=input_shape, rngs=nnx.Rngs(seed)) for seed in (0, 1))
    assert nnx.graphdef(first) == nnx.graphdef(second)
    assert hash(nnx.graphdef(first)) == hash(nnx.graphdef(second))
  traced = []

  @nnx.jit
  def forward(model, x):
    traced.append(1)
    return model(x)['fc2']

  x = batch((28, 28, 1))
  for seed in (0, 1):
    forward(build_backbone('cifarnet', input_shape=(28, 28, 1), rngs=nnx.Rngs(seed)), x)
  assert len(traced) == 1
