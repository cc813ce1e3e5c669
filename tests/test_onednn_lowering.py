"""conv_impl='auto' (every config's default) runs a whole model's convolutions on oneDNN where it can be built:
every convolution of CifarNet, AlexNet and ResNet-18 (CIFAR and ImageNet stems), forward and both gradients, and
the fused conv-ReLU-pool stages, lower to oneDNN's custom calls, and XLA's convolution op is nowhere left.

Why at model level. The op tests (test_ops.py) show that each path computes what XLA computes; they cannot show
that a model reaches them: a layer written with ``nnx.Conv`` instead of jaxssl's ``Conv``, a stage that stops
fusing, or a dispatch that falls back would leave every op test green and the trainer on the slower path. The
convolutions are counted twice, independently: the model's ``jaxssl.ops.layers.Conv`` modules, and the
``convolution`` ops of XLA's lowering of the same function (forward, and the gradient's input and kernel passes).

Abstract models, lowered only (no weights, no compilation): about a second per model. Without oneDNN these tests
skip; CI (JAXSSL_REQUIRE_ONEDNN=1, conftest.py) fails them instead.
"""

import collections
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from conftest import onednn_skip_reason, small_config
from jaxssl import ops, sharding
from jaxssl.data import pipeline
from jaxssl.models import build_backbone
from jaxssl.ops import conv_pool, layers
from jaxssl.train.experiment import build_experiment
from jaxssl.train.state import merge_model

ONEDNN_REASON = onednn_skip_reason()
pytestmark = pytest.mark.skipif(ONEDNN_REASON is not None, reason=str(ONEDNN_REASON))

# name, input shape, options, number of fused conv-ReLU-pool stages
MODELS = [
    ('cifarnet', (28, 28, 1), {}, 2),
    ('alexnet', (67, 67, 3), {'width': 0.125, 'fc_width': 8, 'dropout': 0.0}, 3),  # the smallest input it takes
    ('resnet18_cifar', (16, 16, 3), {'width': 0.125}, 0),
    ('resnet18', (32, 32, 3), {'width': 0.125}, 0),
]
CONV_CALLS = ('forward', 'input_grad', 'kernel_grad')


def _onednn_calls(text: str) -> collections.Counter:
  """How many times the lowered ``text`` calls each of oneDNN's custom calls (``forward``, ``bn_forward``...)."""
  return collections.Counter(re.findall(r'@jaxssl_onednn_conv_(\w+)\(', text))


def _xla_convolutions(text: str) -> int:
  return len(re.findall(r'\bstablehlo\.convolution\b', text))


@pytest.fixture(autouse=True)
def _auto_runs_onednn_here():
  if jax.default_backend() != 'cpu' or jax.device_count() != 1:
    pytest.skip(f"'auto' takes XLA's convolutions off a single CPU device ({jax.device_count()} "
                f'{jax.default_backend()} device(s) here)')
  assert ops.cpu_path('auto') == 'onednn'


@pytest.mark.parametrize('name,shape,options,fused', MODELS, ids=[m[0] for m in MODELS])
def test_auto_lowers_every_convolution_of_the_model_to_onednn(name, shape, options, fused, monkeypatch):
  stages = []  # the backend of every fused stage traced
  real_stage = conv_pool.conv_pool_relu

  def counted_stage(*args, **kwargs):
    stages.append(kwargs['backend'])
    return real_stage(*args, **kwargs)

  monkeypatch.setattr(conv_pool, 'conv_pool_relu', counted_stage)
  # Abstract (shapes only): initializing the weights would cost more than all the lowering.
  model = nnx.eval_shape(lambda: build_backbone(name, input_shape=shape, rngs=nnx.Rngs(0), **options))
  n_conv = sum(isinstance(m, layers.Conv) for _, m in nnx.iter_modules(model))
  n_bn = sum(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_modules(model))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jnp.ones((2, *shape))

  def loss(params, rest, train):
    m = merge_model(graphdef, params, rest)
    return jnp.sum(m(x, train=train)[m.output_name])

  def lowered(impl):
    with ops.use_impl(impl):
      return (jax.jit(lambda p, r: loss(p, r, False)).lower(params, rest).as_text(),
              jax.jit(jax.grad(lambda p, r: loss(p, r, True))).lower(params, rest).as_text())

  xla_forward, xla_grad = lowered('xla')
  assert n_conv > 0
  assert _xla_convolutions(xla_forward) == n_conv  # the Conv modules are all its convolutions
  assert not stages  # XLA's path pools the unfused layers
  forward, grad = lowered('auto')
  assert stages == ['onednn'] * (2 * fused)  # each fused stage, traced once per function, on oneDNN
  assert _xla_convolutions(forward) == _xla_convolutions(grad) == 0
  assert _onednn_calls(forward) == {'forward': n_conv}
  calls = _onednn_calls(grad)
  # The first convolution's input gradient is never computed: the images need none (nor does XLA compute one).
  assert {c: calls[c] for c in CONV_CALLS} == {'forward': n_conv, 'input_grad': n_conv - 1, 'kernel_grad': n_conv}
  assert sum(calls[c] for c in CONV_CALLS) == _xla_convolutions(xla_grad)
  assert calls['bn_forward'] == calls['bn_backward'] == n_bn  # training BatchNorm too (ResNet's)
  assert 'select_and_scatter' not in grad  # every max pool's gradient from stored offsets, none of XLA's


def test_the_trainers_step_lowers_every_convolution_to_onednn(generated_tfds_dir):
  """The step the trainer jits, as a config builds it (model.conv_impl='auto', the default): every convolution
  pass that XLA's lowering of the same step has is one of oneDNN's calls."""
  config = small_config(generated_tfds_dir, batch_size=8)
  assert config.model.conv_impl == 'auto'
  exp = build_experiment(config)
  it = pipeline.train_iterator(exp.train_source, exp.tasks, global_batch=config.batch_size, seed=0, mesh=exp.mesh)
  try:
    batch = sharding.shard_batch(next(it), exp.mesh)
  finally:
    getattr(it, 'close', lambda: None)()
  rng = jax.random.PRNGKey(0)
  with ops.use_impl('xla'):
    xla = exp.train_step.lower(exp.state, batch, rng).as_text()
  text = exp.train_step.lower(exp.state, batch, rng).as_text()  # the setting the experiment made: 'auto'
  calls = _onednn_calls(text)
  assert _xla_convolutions(xla) > 0 and _xla_convolutions(text) == 0
  assert sum(calls[c] for c in CONV_CALLS) == _xla_convolutions(xla)
  assert calls['forward'] == calls['kernel_grad'] > 0
