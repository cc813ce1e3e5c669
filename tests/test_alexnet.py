"""AlexNet: the paper's shapes at 227 px, the same parameters at every input size, its normalizations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxssl import ops
from jaxssl.models import build_backbone, feature_shapes
from jaxssl.models.alexnet import adaptive_avg_pool, local_response_norm


def abstract(shape, **opts):
  return nnx.eval_shape(lambda: build_backbone('alexnet', input_shape=shape, rngs=nnx.Rngs(0), **opts))


def param_shapes(model):
  return jax.tree.map(lambda x: x.shape, nnx.state(model, nnx.Param))


def test_feature_shapes_and_parameter_count_at_227():
  model = abstract((227, 227, 3))
  assert feature_shapes(model, (227, 227, 3)) == {
      'conv1': (55, 55, 96), 'pool1': (27, 27, 96), 'conv2': (27, 27, 256), 'pool2': (13, 13, 256),
      'conv3': (13, 13, 384), 'conv4': (13, 13, 384), 'conv5': (13, 13, 256), 'pool5': (6, 6, 256),
      'fc6': (4096,), 'fc7': (4096,)}
  # One-tower AlexNet without the 1000-way fc8: 62,378,344 - (4096 * 1000 + 1000).
  assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 58_281_344
  assert model.output_name == 'fc7'


def test_same_parameters_at_every_input_size():
  """pool5 is average-pooled to 6x6, so a backbone trained on 72 px tiles or 256 px images loads at 227."""
  ref = param_shapes(abstract((227, 227, 3), norm='batch'))
  for size in (67, 72, 256):
    assert param_shapes(abstract((size, size, 3), norm='batch')) == ref
  with pytest.raises(ValueError, match='at least 67x67'):
    abstract((64, 64, 3))
  with pytest.raises(ValueError, match="unknown norm 'group'"):
    abstract((227, 227, 3), norm='group')


def test_small_forward_train_and_eval():
  # One model, initialized in one compiled function (eagerly, each operation compiles: most of the cost on a CPU);
  # 'lrn' is checked against its formula below.
  model = nnx.jit(lambda: build_backbone('alexnet', input_shape=(72, 72, 3), rngs=nnx.Rngs(0), norm='batch',
                                         width=0.25, fc_width=32))()
  x = jax.random.normal(jax.random.key(0), (2, 72, 72, 3))
  # One compiled function for both modes (compiling is most of this test's time on a CPU).
  train, test = nnx.jit(lambda m, x: (m(x, train=True, rng=jax.random.key(1)), m(x, train=False)))(model, x)
  shapes = feature_shapes(model, (72, 72, 3))
  for k in model.feature_names:
    assert test[k].shape == (2, *shapes[k]) and np.all(np.isfinite(test[k]))
  assert not np.allclose(train['fc7'], test['fc7'])   # dropout (and batch statistics) act in training only
  with pytest.raises(ValueError, match='needs rng'):   # said as it is traced
    nnx.jit(lambda m, x: m(x, train=True))(model, x)


def test_adaptive_pool_and_lrn_match_their_definitions():
  h = jnp.arange(2 * 7 * 6 * 3, dtype=jnp.float32).reshape(2, 7, 6, 3)
  np.testing.assert_array_equal(adaptive_avg_pool(jnp.ones((1, 6, 6, 2)) * 3, 6), jnp.ones((1, 6, 6, 2)) * 3)
  out = adaptive_avg_pool(h, 2)                    # rows 0..3 and 3..6 (overlapping when 7 does not divide)
  np.testing.assert_allclose(out[:, 1, 0], h[:, 3:7, 0:3].mean(axis=(1, 2)), rtol=1e-6)
  x = jax.random.normal(jax.random.key(0), (1, 2, 2, 7)) * 30
  got = local_response_norm(x)
  c = 3
  window = jnp.sum(jnp.square(x[..., c - 2:c + 3]), -1)
  np.testing.assert_allclose(got[..., c], x[..., c] / (2.0 + 1e-4 * window) ** 0.75, rtol=1e-5)
  edge = jnp.sum(jnp.square(x[..., 0:3]), -1)      # channel 0 sees channels 0..2 only
  np.testing.assert_allclose(got[..., 0], x[..., 0] / (2.0 + 1e-4 * edge) ** 0.75, rtol=1e-5)


def test_cpu_fast_paths_give_xla_gradients():
  """The setting 'im2col' (the stride-4 11x11 conv1, the VALID 3x3/2 pools) against XLA's own ops."""
  x = jax.random.normal(jax.random.key(0), (2, 67, 67, 3))

  def grads(impl):
    model = build_backbone('alexnet', input_shape=(67, 67, 3), rngs=nnx.Rngs(0), width=0.125, fc_width=8,
                           dropout=0.0)
    graphdef, params = nnx.split(model)
    # Only the layers unlike ResNet's (tests/test_ops.py covers those): XLA drops the rest of the net.
    def loss(p):
      return jnp.sum(jnp.sin(nnx.merge(graphdef, p)(x)['pool2']))

    with ops.use_impl(impl):
      return jax.jit(jax.grad(loss))(params)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), grads('im2col'), grads('xla'))
