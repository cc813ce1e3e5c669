"""The CPU fast paths (jaxssl/ops) compute what XLA's reference ops compute: values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxssl.models import build_backbone
from jaxssl.ops import conv as conv_ops
from jaxssl.ops import pool as pool_ops
from jaxssl.train.state import merge_model

FAST = conv_ops.make_conv_general_dilated('im2col')
NHWC = conv_ops._NHWC  # pylint: disable=protected-access


@pytest.mark.parametrize('batch,size,cin,cout,k,stride,padding', [
    (8, 9, 3, 5, 3, 1, 'SAME'),
    (6, 14, 8, 4, 5, 1, 'SAME'),           # CifarNet's conv2 shape family
    (8, 9, 3, 5, 3, 2, ((1, 1), (1, 1))),  # ResNet's strided 3x3
    (4, 8, 4, 6, 1, 2, 'VALID'),           # ResNet's 1x1/2 projection shortcut
    (4, 8, 4, 6, 1, 1, 'VALID'),
    (4, 7, 2, 3, 5, 1, ((2, 1), (0, 2))),  # asymmetric padding
    (4, 10, 3, 4, 4, 2, 'SAME'),           # even kernel, strided
    (3, 12, 3, 4, 7, 2, ((3, 3), (3, 3))),  # ImageNet stem
    (4, 9, 1, 6, 5, 1, 'SAME'),            # one input channel (CifarNet's conv1 on grayscale)
    (2, 6, 80, 4, 3, 1, 'SAME'),           # wide input
    (2, 6, 3, 80, 3, 1, 'SAME'),           # wide output
    (2, 11, 3, 4, 3, 3, ((0, 2), (1, 0))),  # stride 3, odd size, lopsided padding
    (2, 9, 4, 3, 1, 3, ((0, 0), (1, 1))),   # strided 1x1 whose input gradient is spread out, padded
])
def test_conv_values_and_gradients_match_xla(batch, size, cin, cout, k, stride, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, cin))
  w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout))

  def loss(conv):
    # A nonlinear loss so the output gradient differs at every position.
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (stride, stride), padding, dimension_numbers=NHWC)))

  y_ref = lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=NHWC)
  y = jax.jit(lambda x, w: FAST(x, w, (stride, stride), padding, dimension_numbers=NHWC))(x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
  ref = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
  got = jax.jit(jax.grad(loss(FAST), (0, 1)))(x, w)
  for g, r in zip(got, ref):
    assert g.shape == r.shape and g.dtype == r.dtype
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))


def test_conv_blocks_do_not_change_the_result():
  """One image per block or the whole batch in one block: the same kernel gradient."""
  x = jax.random.normal(jax.random.PRNGKey(0), (12, 10, 10, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 5))
  grads = [jax.grad(lambda x, w: jnp.sum(conv_ops.conv2d(x, w, (1, 1), ((1, 1), (1, 1)), bb) ** 2), (0, 1))(x, w)
           for bb in (1, 1 << 30)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_unsupported_convolutions_fall_back_to_lax():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 4))
  y = FAST(x, w, (1, 1), 'SAME', dimension_numbers=NHWC, feature_group_count=2)  # grouped
  np.testing.assert_allclose(y, lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC,
                                                         feature_group_count=2), rtol=1e-6)
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 4))
  crop = ((-1, 1), (0, -1))  # negative padding crops: lax's
  y = jax.grad(lambda w: jnp.sum(FAST(x, w, (1, 1), crop, dimension_numbers=NHWC) ** 2))(w)
  np.testing.assert_allclose(y, jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(
      x, w, (1, 1), crop, dimension_numbers=NHWC) ** 2))(w), rtol=1e-5)


def test_auto_uses_xla_off_the_cpu(monkeypatch):
  assert conv_ops.use_im2col('auto') == (jax.default_backend() == 'cpu' and jax.device_count() == 1)
  monkeypatch.setattr(conv_ops.jax, 'default_backend', lambda: 'gpu')
  assert not conv_ops.use_im2col('auto') and conv_ops.use_im2col('im2col') and not conv_ops.use_im2col('xla')
  with pytest.raises(ValueError, match='conv_impl'):
    conv_ops.use_im2col('fast')


@pytest.mark.parametrize('size,window,stride,padding', [
    (28, 3, 2, 'SAME'), (14, 3, 2, 'SAME'), (9, 2, 2, 'VALID'), (12, 3, 2, ((1, 1), (1, 1))), (7, 3, 1, 'SAME')])
def test_max_pool_gradient_equals_select_and_scatter(size, window, stride, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 4))
  # Ties everywhere, as after a ReLU or on flat image regions: the first maximum of each window must win.
  x = jnp.concatenate([x, jnp.round(x), jnp.zeros_like(x)], axis=-1)
  g = jax.random.normal(jax.random.PRNGKey(1), nnx.max_pool(x, (window,) * 2, (stride,) * 2, padding).shape)

  def vjp(pool):
    y, f = jax.vjp(pool, x)
    return y, f(g)[0]

  y_ref, dx_ref = vjp(lambda x: nnx.max_pool(x, (window,) * 2, strides=(stride,) * 2, padding=padding))
  y, dx = jax.jit(lambda x: vjp(lambda x: pool_ops.max_pool(x, (window,) * 2, (stride,) * 2, padding,
                                                             impl='im2col')))(x)
  np.testing.assert_array_equal(y, y_ref)
  # The same input positions receive gradient (ties broken alike); where overlapping windows add up, the
  # sums may differ in the last bit only because they are added in another order.
  np.testing.assert_array_equal(dx != 0, dx_ref != 0)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('name,shape', [('cifarnet', (28, 28, 1)), ('resnet20', (12, 12, 3))])
def test_whole_backbone_gradients_match_between_impls(name, shape):
  """The same parameters give the same features and parameter gradients with either implementation."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, *shape))
  results = []
  for impl in ('xla', 'im2col'):
    model = build_backbone(name, input_shape=shape, rngs=nnx.Rngs(0), conv_impl=impl)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, rest, graphdef=graphdef):
      m = merge_model(graphdef, params, rest)  # train mode: BatchNorm uses (and updates) batch statistics
      return jnp.sum(jnp.tanh(m(x, train=True)[m.output_name]))

    results.append(jax.jit(jax.value_and_grad(loss))(params, rest))
  (v0, g0), (v1, g1) = results
  np.testing.assert_allclose(v0, v1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * max(float(jnp.abs(a).max()), 1e-6))


def test_bench_ops_checks_and_times_every_pass():
  """The per-layer bench checks each fast pass against XLA's before it times it, and says what 'auto' takes."""
  from jaxssl import bench_ops  # pylint: disable=import-outside-toplevel
  row = bench_ops.measure_layer(4, 8, 3, 5, 3, 1, repeats=1)
  assert row['auto_takes'] == 'fwd:gathered dx:gathered dw:gathered'
  for key in ('fwd_xla_ms', 'fwd_fast_ms', 'dx_xla_ms', 'dx_fast_ms', 'dw_xla_ms', 'dw_fast_ms'):
    assert row[key] > 0
  assert bench_ops.measure_layer(4, 8, 3, 5, 3, 2, repeats=1)['auto_takes'] == 'fwd:gathered dx:xla dw:gathered'
  assert bench_ops.measure_layer(2, 6, 3, 4, 1, 2, repeats=1)['auto_takes'] == 'fwd:xla dx:spread dw:matmul'
