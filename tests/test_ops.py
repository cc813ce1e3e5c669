"""The CPU fast paths (jaxssl/ops) compute what XLA's reference ops compute: values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from conftest import onednn_bf16_skip_reason, onednn_skip_reason
from jaxssl import ops
from jaxssl.models import ResNet, build_backbone
from jaxssl.ops import conv as conv_ops
from jaxssl.ops import conv_pool as conv_pool_ops
from jaxssl.ops import dispatch, layers, norm, onednn
from jaxssl.ops import pool as pool_ops
from jaxssl.train.state import merge_model


def conv_on(path):
  """``lax.conv_general_dilated`` as conv.py runs it on ``path``."""
  return functools.partial(conv_ops.conv_general_dilated, path=path)


FAST = conv_on('im2col')
# Skips for want of oneDNN fail CI (JAXSSL_REQUIRE_ONEDNN, conftest.py).
ONEDNN_REASON = onednn_skip_reason()
needs_onednn = pytest.mark.skipif(ONEDNN_REASON is not None, reason=str(ONEDNN_REASON))
NHWC = conv_ops.NHWC


# The im2col path branches on the kernel (1x1 or not), the stride (1 or not) and, for a stride-1 input gradient, the
# sign of the flipped padding (conv.py); it runs one case of each (True), oneDNN every case (its layouts and
# primitives vary with the shapes).
CONV_CASES = [
    ((8, 9, 3, 5, 3, 1, 'SAME'), True),             # k x k, stride 1: forward, input and kernel gradients gathered
    ((6, 14, 8, 4, 5, 1, 'SAME'), False),           # CifarNet's conv2 shape family
    ((8, 9, 3, 5, 3, 2, ((1, 1), (1, 1))), True),  # ResNet's strided 3x3: input gradient by XLA's transposed conv
    ((4, 8, 4, 6, 1, 2, 'VALID'), False),           # ResNet's 1x1/2 projection shortcut
    ((4, 8, 4, 6, 1, 1, 'VALID'), True),            # 1x1, stride 1: XLA's matmul, the kernel gradient a slice's
    ((4, 7, 2, 3, 5, 1, ((2, 1), (0, 2))), True),  # asymmetric padding: asymmetric flipped pads
    ((4, 10, 3, 4, 4, 2, 'SAME'), False),           # even kernel, strided
    ((3, 12, 3, 4, 7, 2, ((3, 3), (3, 3))), False),  # ImageNet stem
    ((4, 9, 1, 6, 5, 1, 'SAME'), False),            # one input channel (CifarNet's conv1 on grayscale)
    ((2, 6, 80, 4, 3, 1, 'SAME'), False),           # wide input
    ((2, 6, 3, 80, 3, 1, 'SAME'), False),           # wide output
    ((2, 11, 3, 4, 3, 3, ((0, 2), (1, 0))), True),  # stride 3, odd size, lopsided padding, an unused padded row
    ((2, 9, 4, 3, 1, 3, ((0, 0), (1, 1))), True),   # strided 1x1 whose input gradient is spread out, padded
    ((2, 6, 3, 4, 3, 1, ((3, 0), (0, 3))), True),   # a pad over k - 1: a negative flipped pad, input gradient by XLA
]


@pytest.mark.parametrize('impl,batch,size,cin,cout,k,stride,padding',
                         [('im2col', *case) for case, im2col in CONV_CASES if im2col] +
                         [pytest.param('onednn', *case, marks=needs_onednn) for case, _ in CONV_CASES])
def test_conv_values_and_gradients_match_xla(impl, batch, size, cin, cout, k, stride, padding):
  fast = conv_on(impl)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, cin))
  w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout))

  def loss(conv):
    # A nonlinear loss so the output gradient differs at every position.
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (stride, stride), padding, dimension_numbers=NHWC)))

  # The references jitted too: one compile each, not one per operation as run eagerly (seconds a case).
  y_ref = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=NHWC))(x, w)
  y = jax.jit(lambda x, w: fast(x, w, (stride, stride), padding, dimension_numbers=NHWC))(x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
  ref = jax.jit(jax.grad(loss(lax.conv_general_dilated), (0, 1)))(x, w)
  got = jax.jit(jax.grad(loss(fast), (0, 1)))(x, w)
  for g, r in zip(got, ref):
    assert g.shape == r.shape and g.dtype == r.dtype
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))


BF16_REASON = onednn_bf16_skip_reason()
needs_onednn_bf16 = pytest.mark.skipif(BF16_REASON is not None, reason=str(BF16_REASON))


@needs_onednn_bf16
@pytest.mark.parametrize('batch,size,cin,cout,k,stride,padding', [
    (8, 9, 3, 5, 3, 1, 'SAME'), (8, 9, 16, 32, 3, 2, ((1, 1), (1, 1))), (4, 8, 16, 32, 1, 2, 'VALID'),
    (6, 14, 8, 16, 5, 1, 'SAME'),
])
def test_onednn_bfloat16_convolutions_match_float32_on_the_same_inputs(batch, size, cin, cout, k, stride, padding):
  """bfloat16 through oneDNN: its custom calls (not the gathered path), products accumulated in float32, so the
  results are the float32 convolution of the same bf16 inputs rounded once to bf16."""
  fast = conv_on('onednn')
  bf16 = jnp.bfloat16
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, cin)).astype(bf16)
  w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout)).astype(bf16)
  y_shape = jax.eval_shape(lambda: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                                            dimension_numbers=NHWC)).shape
  g = jax.random.normal(jax.random.PRNGKey(2), y_shape).astype(bf16)

  def run(conv, x, w):
    y, vjp = jax.vjp(lambda x, w: conv(x, w, (stride, stride), padding, dimension_numbers=NHWC), x, w)
    return (y, *vjp(g.astype(y.dtype)))

  text = jax.jit(lambda x, w: run(fast, x, w)).lower(x, w).as_text()
  assert 'jaxssl_onednn_conv_forward' in text and 'jaxssl_onednn_conv_kernel_grad' in text
  got = jax.jit(lambda x, w: run(fast, x, w))(x, w)
  ref = jax.jit(lambda x, w: run(lax.conv_general_dilated, x, w))(x.astype(jnp.float32), w.astype(jnp.float32))
  for a, r in zip(got, ref):
    assert a.dtype == bf16
    # one bf16 rounding of the result (2^-8 relative), plus float32 summation order
    np.testing.assert_allclose(a.astype(jnp.float32), r, rtol=2 ** -7, atol=2 ** -7 * float(jnp.abs(r).max()))


def test_conv_blocks_do_not_change_the_result():
  """One image per block or the whole batch in one block: the same kernel gradient."""
  x = jax.random.normal(jax.random.PRNGKey(0), (12, 10, 10, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 5))
  grads = [jax.jit(jax.grad(lambda x, w, bb=bb: jnp.sum(conv_ops.conv2d(x, w, (1, 1), ((1, 1), (1, 1)), bb) ** 2),
                            (0, 1)))(x, w)
           for bb in (1, 1 << 30)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_unsupported_convolutions_fall_back_to_lax():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 4))
  y = FAST(x, w, (1, 1), 'SAME', dimension_numbers=NHWC, feature_group_count=2)  # grouped
  np.testing.assert_allclose(y, lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC,
                                                         feature_group_count=2), rtol=1e-6)


@pytest.mark.parametrize('impl', ['im2col', pytest.param('onednn', marks=needs_onednn)])
def test_cropping_padding_is_a_slice_of_the_input(impl):
  """Negative padding crops: the same as slicing the input first (XLA's CPU convolution got this wrong in jax
  0.10.2, returning garbage, so it is not the reference here)."""
  fast = conv_on(impl)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 4))
  crop = ((-1, 1), (0, -1))

  def reference(x, w):
    return lax.conv_general_dilated(x[:, 1:, :-1], w, (1, 1), ((0, 1), (0, 0)), dimension_numbers=NHWC)

  def loss(conv):
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w)))

  got = jax.jit(lambda x, w: fast(x, w, (1, 1), crop, dimension_numbers=NHWC))(x, w)
  np.testing.assert_allclose(got, jax.jit(reference)(x, w), rtol=1e-5, atol=1e-4)
  grads = jax.jit(jax.grad(loss(lambda x, w: fast(x, w, (1, 1), crop, dimension_numbers=NHWC)), (0, 1)))(x, w)
  for g, r in zip(grads, jax.jit(jax.grad(loss(reference), (0, 1)))(x, w)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))


def test_auto_uses_xla_off_the_cpu(monkeypatch):
  assert (ops.cpu_path('auto') != 'xla') == (jax.default_backend() == 'cpu' and jax.device_count() == 1)
  if ops.cpu_path('auto') != 'xla':
    assert ops.cpu_path('auto') == ('onednn' if onednn.available() else 'im2col')
  monkeypatch.setattr(dispatch.jax, 'default_backend', lambda: 'gpu')
  assert [ops.cpu_path(i) for i in ('auto', 'im2col', 'xla')] == ['xla', 'im2col', 'xla']
  with ops.use_impl('auto'):
    assert ops.cpu_path() == 'xla'  # the current setting, resolved when asked
  with pytest.raises(ValueError, match='conv_impl'):
    ops.cpu_path('fast')


def test_the_setting_is_validated_and_scoped():
  """One line naming every choice for an unknown name, set or scoped; a block's setting ends with the block."""
  before = ops.current_impl()
  assert before in ops.IMPLS
  for call in (ops.set_impl, lambda impl: ops.use_impl(impl).__enter__(), ops.cpu_path, ops.describe_path):
    with pytest.raises(ValueError) as e:
      call('fast')
    assert str(e.value) == ("unknown conv impl 'fast'; choose one of: auto, xla, im2col, onednn "
                            '(set --config.model.conv_impl)')
  assert ops.current_impl() == before
  with ops.use_impl('im2col'):
    assert ops.current_impl() == 'im2col' and ops.cpu_path() == 'im2col'
    with ops.use_impl('xla'):
      assert ops.current_impl() == 'xla'
    assert ops.current_impl() == 'im2col'
  assert ops.current_impl() == before
  try:
    ops.set_impl('xla')
    assert ops.current_impl() == 'xla'
    with ops.use_impl('im2col'):
      assert ops.current_impl() == 'im2col'
    assert ops.current_impl() == 'xla'
  finally:
    ops.set_impl(before)


def _cifarnet_step_text(impl):
  """The lowered train-mode gradient of a CifarNet (built outside the setting: the layers read it when traced)."""
  model = build_backbone('cifarnet', input_shape=(28, 28, 1), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  x = jnp.ones((2, 28, 28, 1))
  with ops.use_impl(impl):
    return jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x, train=True)['fc2']))).lower(
        params).as_text()


def test_a_backbone_of_plain_layers_takes_the_path_of_the_setting():
  xla = _cifarnet_step_text('xla')
  assert 'jaxssl_onednn_conv' not in xla and 'stablehlo.convolution' in xla and 'select_and_scatter' in xla
  im2col = _cifarnet_step_text('im2col')  # gathered windows and matmuls, pools with offsets
  assert 'jaxssl_onednn_conv' not in im2col and 'stablehlo.convolution' not in im2col
  assert 'select_and_scatter' not in im2col


@needs_onednn
def test_a_backbone_of_plain_layers_takes_onednn_where_the_setting_says_so():
  text = _cifarnet_step_text('onednn')
  assert 'stablehlo.convolution' not in text and 'select_and_scatter' not in text
  for call in ('forward', 'input_grad', 'kernel_grad'):  # conv1's input gradient is dropped: conv2's remains
    assert f'jaxssl_onednn_conv_{call}' in text


def test_a_jitted_function_is_traced_again_under_another_setting():
  """The setting is part of jit's cache key: a trace made under one is never reused under another."""
  model = build_backbone('cifarnet', input_shape=(28, 28, 1), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  traced = []

  @nnx.jit
  def forward(model, x):
    traced.append(ops.current_impl())
    return model(x)['fc2']

  results = {}
  for impl in ('xla', 'im2col', 'xla', 'im2col'):
    with ops.use_impl(impl):
      results.setdefault(impl, []).append(forward(model, x))
  assert traced == ['xla', 'im2col']
  np.testing.assert_allclose(results['im2col'][0], results['xla'][0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('size,window,stride,padding', [
    (14, 3, 2, 'SAME'), (9, 2, 2, 'VALID'), (12, 3, 2, ((1, 1), (1, 1))), (7, 3, 1, 'SAME')])
def test_max_pool_gradient_equals_select_and_scatter(size, window, stride, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 4))
  # Ties everywhere, as after a ReLU or on flat image regions: the first maximum of each window must win.
  x = jnp.concatenate([x, jnp.round(x), jnp.zeros_like(x)], axis=-1)
  g = jax.random.normal(jax.random.PRNGKey(1), nnx.max_pool(x, (window,) * 2, (stride,) * 2, padding).shape)

  def vjp(pool):
    y, f = jax.vjp(pool, x)
    return y, f(g)[0]

  y_ref, dx_ref = jax.jit(lambda: vjp(lambda x: nnx.max_pool(x, (window,) * 2, strides=(stride,) * 2,
                                                             padding=padding)))()
  with ops.use_impl('im2col'):
    y, dx = jax.jit(lambda x: vjp(lambda x: layers.max_pool(x, (window,) * 2, (stride,) * 2, padding)))(x)
    assert 'select_and_scatter' not in jax.jit(lambda x: vjp(lambda x: layers.max_pool(
        x, (window,) * 2, (stride,) * 2, padding))).lower(x).as_text()
  np.testing.assert_array_equal(y, y_ref)
  # The same input positions receive gradient (ties broken alike); where overlapping windows add up, the
  # sums may differ in the last bit only because they are added in another order.
  np.testing.assert_array_equal(dx != 0, dx_ref != 0)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-6)


def _conv_relu_pool_reference(x, w, b, stride, padding, window, pool_stride, pool_padding):
  h = jax.nn.relu(lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=NHWC) + b)
  return nnx.max_pool(h, window, strides=pool_stride, padding=pool_padding)


# The fused loop on im2col for the cases whose pads differ (the two others: pads as CifarNet conv1's), on oneDNN for
# every case; CifarNet conv1's case on im2col one image per block (block_bytes=1: the scan over blocks, 6 of them).
CONV_POOL_CASES = [
    ((6, 28, 1, 8, 5, 1, 'SAME', 3, 2, 'SAME'), True),    # CifarNet conv1 -> pool1 (28 -> 14)
    ((5, 14, 6, 4, 5, 1, 'SAME', 3, 2, 'SAME'), False),   # CifarNet conv2 -> pool2 (14 -> 7)
    ((4, 16, 3, 5, 5, 1, 'SAME', 3, 2, 'SAME'), False),   # 32x32 family, even map
    ((3, 35, 3, 4, 11, 4, 'VALID', 3, 2, 'VALID'), True),  # AlexNet conv1 -> pool1
    ((4, 9, 4, 3, 3, 1, ((1, 1), (1, 1)), 2, 2, 'VALID'), True),
    ((3, 10, 2, 3, 3, 2, ((1, 0), (0, 1)), 3, 1, ((1, 1), (1, 1))), True),  # strided conv, stride-1 padded pool
]


@pytest.mark.parametrize(
    'backend,block_bytes,batch,size,cin,cout,k,stride,padding,window,pool_stride,pool_padding',
    [('im2col', 1 if i == 0 else conv_ops.BLOCK_BYTES, *case) for i, (case, im2col) in enumerate(CONV_POOL_CASES)
     if im2col] +
    [pytest.param('onednn', conv_ops.BLOCK_BYTES, *case, marks=needs_onednn) for case, _ in CONV_POOL_CASES])
def test_conv_relu_pool_values_and_gradients_match_xla(backend, block_bytes, batch, size, cin, cout, k, stride,
                                                       padding, window, pool_stride, pool_padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, cin))
  w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout)) / k
  b = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (cout,))  # some channels mostly negative: ReLU zeros
  args = ((stride,) * 2, padding, (window,) * 2, (pool_stride,) * 2, pool_padding)
  explicit = pool_ops.explicit_pads
  pads = explicit(padding, (size, size), (k, k), (stride,) * 2)
  conv_hw = lax.conv_general_dilated(x, w, (stride,) * 2, padding, dimension_numbers=NHWC).shape[1:3]
  pool_pads = explicit(pool_padding, conv_hw, (window,) * 2, (pool_stride,) * 2)

  def fused(x, w, b):
    return conv_pool_ops.conv_pool_relu(x, w, b, (stride,) * 2, pads, (window,) * 2, (pool_stride,) * 2, pool_pads,
                                        block_bytes=block_bytes, backend=backend)

  y_ref = jax.jit(lambda x, w, b: _conv_relu_pool_reference(x, w, b, *args))(x, w, b)
  y = jax.jit(fused)(x, w, b)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  r = jax.random.normal(jax.random.PRNGKey(3), y.shape)
  ref = jax.jit(jax.grad(lambda *a: jnp.sum(_conv_relu_pool_reference(*a, *args) * r), (0, 1, 2)))(x, w, b)
  got = jax.jit(jax.grad(lambda *a: jnp.sum(fused(*a) * r), (0, 1, 2)))(x, w, b)
  for g, e in zip(got, ref):
    assert g.shape == e.shape and g.dtype == e.dtype
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(jnp.abs(e).max()))
  # A first layer's input needs no gradient: the kernel and bias gradients are the same without it.
  got_wb = jax.jit(jax.grad(lambda w, b: jnp.sum(fused(x, w, b) * r), (0, 1)))(w, b)
  for g, e in zip(got_wb, ref[1:]):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(jnp.abs(e).max()))


@needs_onednn_bf16
def test_conv_relu_pool_in_bfloat16_on_onednn():
  """A bfloat16 stage runs oneDNN's bf16 convolution and pools in float32: what XLA computes in float32 from the
  same bf16 inputs with the conv output rounded to bf16 (which makes window ties; a last-bit difference in the
  rounding may still move one, so the input gradient compares in norm)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 12, 12, 8)).astype(jnp.bfloat16)
  w = (jax.random.normal(jax.random.PRNGKey(1), (3, 3, 8, 16)) / 3).astype(jnp.bfloat16)
  b = (0.3 * jax.random.normal(jax.random.PRNGKey(2), (16,))).astype(jnp.bfloat16)
  args = ((1, 1), ((1, 1), (1, 1)), (3, 3), (2, 2), ((0, 1), (0, 1)))
  r = jax.random.normal(jax.random.PRNGKey(3), (8, 6, 6, 16))

  def fused(x, w, b):
    return jnp.sum(conv_pool_ops.conv_pool_relu(x, w, b, *args, backend='onednn').astype(jnp.float32) * r)

  def reference(x, w, b):
    y = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)
    y = y + lax.stop_gradient(y.astype(jnp.bfloat16).astype(jnp.float32) - y)  # oneDNN's output rounding
    return jnp.sum(nnx.max_pool(jax.nn.relu(y + b), (3, 3), strides=(2, 2), padding=((0, 1), (0, 1))) * r)

  text = jax.jit(lambda x, w, b: conv_pool_ops.conv_pool_relu(x, w, b, *args, backend='onednn')).lower(
      x, w, b).as_text()
  assert 'jaxssl_onednn_conv_forward' in text
  v1, g1 = jax.jit(jax.value_and_grad(fused, (0, 1, 2)))(x, w, b)
  v0, g0 = jax.jit(jax.value_and_grad(reference, (0, 1, 2)))(*(a.astype(jnp.float32) for a in (x, w, b)))
  np.testing.assert_allclose(v1, v0, rtol=1e-2)
  for a, e in zip(g1, g0):
    assert a.dtype == jnp.bfloat16
    a = a.astype(jnp.float32)
    assert float(jnp.linalg.norm((a - e).ravel()) / jnp.linalg.norm(e.ravel())) < 1e-2  # measured: 2-3e-3


def test_conv_relu_pool_ties_go_to_the_first_maximum():
  """Flat inputs make every window tie: the gradient lands where select-and-scatter puts it."""
  x = jnp.round(2 * jax.random.uniform(jax.random.PRNGKey(0), (2, 12, 12, 2)))  # values 0, 1, 2: many ties
  x = x.at[:, :, 6:].set(1.0)
  w = jnp.ones((3, 3, 2, 3)).at[..., 1].set(-1.0)  # channel 1 all negative: ReLU zeros everywhere
  b = jnp.array([0.0, 0.5, -2.0])
  args = ((1, 1), ((1, 1), (1, 1)), (3, 3), (2, 2), ((0, 1), (0, 1)))
  r = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 3))
  ref = jax.jit(jax.grad(lambda x, w: jnp.sum(_conv_relu_pool_reference(x, w, b, *args[:4], args[4]) * r),
                         (0, 1)))(x, w)
  got = jax.jit(jax.grad(lambda x, w: jnp.sum(conv_pool_ops.conv_pool_relu(x, w, b, *args) * r), (0, 1)))(x, w)
  for g, e in zip(got, ref):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('impl', ['xla', 'im2col', pytest.param('onednn', marks=needs_onednn)])
def test_conv_relu_max_pool_takes_an_nnx_conv(impl, monkeypatch):
  """The fused loop where the setting runs a CPU path and the conv is one it covers; the unfused layers (the same
  values) for the 'xla' path and for convolutions it does not cover, such as a dilated one."""
  fused_calls, fused = [], conv_pool_ops.conv_pool_relu

  def counted(*args, **kwargs):
    fused_calls.append(kwargs['backend'])
    return fused(*args, **kwargs)

  monkeypatch.setattr(conv_pool_ops, 'conv_pool_relu', counted)
  conv = nnx.Conv(3, 4, (5, 5), padding='SAME', rngs=nnx.Rngs(0))
  conv.bias[...] = jnp.linspace(-0.5, 0.5, 4)
  dilated = nnx.Conv(3, 4, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 13, 13, 3))
  with ops.use_impl(impl):
    for c, window, strides in ((conv, (3, 3), (2, 2)), (dilated, 3, 2)):
      h, pooled = layers.conv_relu_max_pool(c, x, window, strides, 'SAME')
      np.testing.assert_allclose(h, jax.nn.relu(c(x)), rtol=1e-6, atol=1e-6)
      np.testing.assert_allclose(pooled, nnx.max_pool(jax.nn.relu(c(x)), (3, 3), strides=(2, 2), padding='SAME'),
                                 rtol=1e-5, atol=1e-5)
  assert fused_calls == ([] if impl == 'xla' else [impl])


@functools.lru_cache(maxsize=None)
def _backbone_value_and_grads(name, shape, options, impl):
  """A train-mode loss of a backbone's output and first pooled map, and its parameter gradients, under ``impl``
  (cached: every implementation compares with the same 'xla' result)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, *shape))
  if name == 'resnet':   # a ResNet of the options' stages (CIFAR stem)
    model = ResNet(input_shape=shape, rngs=nnx.Rngs(0), imagenet_stem=False, **dict(options))
  else:
    model = build_backbone(name, input_shape=shape, rngs=nnx.Rngs(0), **dict(options))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params, rest):
    m = merge_model(graphdef, params, rest)  # train mode: BatchNorm uses (and updates) batch statistics
    f = m(x, train=True)
    return jnp.sum(jnp.tanh(f[m.output_name])) + jnp.sum(jnp.tanh(f[m.feature_names[1]]))  # and a pooled map

  with ops.use_impl(impl):
    return jax.jit(jax.value_and_grad(loss))(params, rest)


@pytest.mark.parametrize('name,shape,options', [
    ('cifarnet', (28, 28, 1), {}),
    ('resnet', (12, 12, 3), {'stage_sizes': (1, 1, 1), 'stage_widths': (16, 32, 64)}),  # resnet20's blocks, 1 a stage
    ('alexnet', (67, 67, 3), {'width': 0.125, 'fc_width': 8, 'dropout': 0.0}),  # every pool fused
    ('alexnet', (67, 67, 3), {'width': 0.125, 'fc_width': 8, 'dropout': 0.0, 'norm': 'lrn'}),  # pool5 fused
    ('alexnet', (67, 67, 3), {'width': 0.125, 'fc_width': 8, 'dropout': 0.0, 'norm': 'batch'}),  # BN + ReLU
])
@pytest.mark.parametrize('impl', ['im2col', pytest.param('onednn', marks=needs_onednn)])
def test_whole_backbone_gradients_match_between_impls(name, shape, options, impl):
  """The same parameters give the same features and parameter gradients with every implementation as XLA's."""
  v0, g0 = _backbone_value_and_grads(name, shape, tuple(options.items()), 'xla')
  v1, g1 = _backbone_value_and_grads(name, shape, tuple(options.items()), impl)
  # A convolution's bias before a BatchNorm has a zero gradient in exact arithmetic: its computed one is rounding
  # noise, compared at a hundredth of the largest gradient's scale.
  scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g0))
  np.testing.assert_allclose(v0, v1, rtol=1e-5)
  assert jax.tree.structure(g0) == jax.tree.structure(g1)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * max(float(jnp.abs(a).max()), 1e-2 * scale, 1e-6))


def test_onednn_unavailable_is_one_clear_error(monkeypatch):
  """Asked for by name where it cannot be built: an error saying why and what to use; 'auto' falls back."""
  monkeypatch.setattr(onednn, '_load', lambda: 'no oneDNN found (test)')
  with pytest.raises(ValueError, match=r'conv_impl=onednn: no oneDNN found \(test\); or set --config.model.conv_impl='):
    ops.cpu_path('onednn')
  with pytest.raises(ValueError, match='conv_impl=onednn: no oneDNN found'), ops.use_impl('onednn'):
    layers.max_pool(jnp.ones((1, 4, 4, 1)), 2, 2)  # at trace time, from any layer
  if jax.default_backend() == 'cpu' and jax.device_count() == 1:
    assert ops.cpu_path('auto') == 'im2col'


@needs_onednn
def test_onednn_library_is_built_once_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv('JAXSSL_CACHE_DIR', str(tmp_path))
  first = onednn._build()  # pylint: disable=protected-access
  stamp = first.stat().st_mtime_ns
  assert onednn._build() == first and first.stat().st_mtime_ns == stamp  # pylint: disable=protected-access
  # The library and its recorded sha256; no temporary files left behind.
  assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, first.name + '.sha256']


def test_bench_ops_checks_and_times_every_pass():
  """The per-layer bench checks each fast pass against XLA's before it times it, reports a time for every pass
  (how fast is the bench's to say, not a test's) and says what 'auto' takes."""
  from jaxssl.bench import ops as bench_ops  # pylint: disable=import-outside-toplevel
  row = bench_ops.measure_layer(4, 8, 3, 5, 3, 1, repeats=1)
  assert row['im2col_takes'] == 'fwd:gathered dx:gathered dw:gathered'
  assert row['auto_takes'] == ('fwd:onednn dx:onednn dw:onednn' if onednn.available() else row['im2col_takes'])
  for key in ('fwd_xla_ms', 'fwd_fast_ms', 'dx_xla_ms', 'dx_fast_ms', 'dw_xla_ms', 'dw_fast_ms',
              *(('fwd_onednn_ms', 'dx_onednn_ms', 'dw_onednn_ms') if onednn.available() else ())):
    assert isinstance(row[key], float) and np.isfinite(row[key]), (key, row[key])
  assert bench_ops._im2col_takes(3, 2) == 'fwd:gathered dx:xla dw:gathered'  # pylint: disable=protected-access
  assert bench_ops.measure_layer(2, 6, 3, 4, 1, 2, repeats=1)['im2col_takes'] == 'fwd:xla dx:spread dw:matmul'


def test_a_run_says_which_convolutions_it_uses(monkeypatch):
  assert ops.describe_path('xla') == "convolutions: XLA's own (conv_impl=xla)"
  with ops.use_impl('xla'):
    assert ops.describe_path() == "convolutions: XLA's own (conv_impl=xla)"  # the current setting
  assert ops.describe_path('im2col').startswith('convolutions: gathered-window')
  if jax.default_backend() == 'cpu' and jax.device_count() == 1:
    monkeypatch.setattr(onednn, '_load', lambda: 'no oneDNN found (test)')
    assert ops.describe_path('auto') == (
        'convolutions: gathered-window matmuls (conv_impl=auto); oneDNN unavailable: no oneDNN found (test)')


@needs_onednn
def test_a_run_says_when_it_uses_onednn_and_in_which_types():
  assert ops.describe_path('onednn') == (
      "convolutions: oneDNN's (custom calls) (conv_impl=onednn), with training BatchNorm; " +
      ('float32 and bfloat16' if onednn.supports(jnp.bfloat16) else
       'float32; bfloat16 takes the gathered path (oneDNN has no bf16 kernels for this CPU)'))


def _norm_step(impl, shape, act, use_running_average=False, dtype=None, x_dtype=None):
  """A BatchNorm (+ ReLU; module dtype ``dtype``, input in ``x_dtype`` or that) through ``layers.batch_norm_act``
  under the setting ``impl``: output, gradients of a weighted sum with respect to x, scale and bias, and the
  running averages after."""
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  bn = nnx.BatchNorm(shape[-1], momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=nnx.Rngs(0))
  bn.scale[...] = 1 + 0.5 * jax.random.normal(keys[0], (shape[-1],))
  bn.bias[...] = jax.random.normal(keys[1], (shape[-1],))
  bn.mean[...] = jax.random.normal(keys[5], (shape[-1],))
  x = (3 * jax.random.normal(keys[2], shape) + 1).astype(x_dtype or dtype or jnp.float32)
  w = jax.random.normal(keys[4], shape)
  graphdef, state = nnx.split(bn)

  def loss(state, x):
    m = nnx.merge(graphdef, state)
    y = layers.batch_norm_act(m, x, use_running_average=use_running_average, act=act)
    return jnp.sum(y.astype(jnp.float32) * w), (y, nnx.state(m, nnx.BatchStat))

  with ops.use_impl(impl):
    (_, (y, stats)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(state, x)
  return y, grads, stats


@needs_onednn
@pytest.mark.parametrize('shape', [(8, 5, 5, 16), (4, 3, 3, 40), (32, 24)])
@pytest.mark.parametrize('act', ['none', 'relu'])
def test_onednn_batch_norm_matches_flax(shape, act):
  """oneDNN's batch norm (ReLU fused) gives flax's output, gradients and running statistics."""
  assert norm.onednn_eligible(nnx.BatchNorm(shape[-1], rngs=nnx.Rngs(0)), jnp.zeros(shape), False)
  y0, g0, s0 = _norm_step('xla', shape, act)
  y1, g1, s1 = _norm_step('onednn', shape, act)
  np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
  if act == 'relu':
    assert float(jnp.mean(y1 == 0)) > 0.2  # the ReLU really cut (and its gradient mask matters below)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(float(jnp.abs(b).max()), 1e-6))
  assert jax.tree.structure(s1) == jax.tree.structure(s0)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s0)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert not np.allclose(s1['mean'][...], jax.random.normal(jax.random.split(jax.random.PRNGKey(0), 6)[5],
                                                             (shape[-1],)))  # updated


@needs_onednn_bf16
@pytest.mark.parametrize('act', ['none', 'relu'])
def test_onednn_bfloat16_batch_norm_matches_flax(act):
  """bfloat16 data in a bfloat16 module: oneDNN's call (float32 statistics and arithmetic) gives flax's float32
  batch norm of the same bf16 inputs, rounded once to bf16; the dtypes are those of flax's bf16 module."""
  shape = (8, 5, 5, 32)
  bn = nnx.BatchNorm(32, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  assert norm.onednn_eligible(bn, jnp.zeros(shape, jnp.bfloat16), False)
  assert not norm.onednn_eligible(nnx.BatchNorm(32, rngs=nnx.Rngs(0)), jnp.zeros(shape, jnp.bfloat16),
                                  False)  # flax would promote to float32 there
  y1, g1, s1 = _norm_step('onednn', shape, act, dtype=jnp.bfloat16)
  y_bf16, g_bf16, _ = _norm_step('xla', shape, act, dtype=jnp.bfloat16)
  assert y1.dtype == y_bf16.dtype == jnp.bfloat16
  assert [a.dtype for a in jax.tree.leaves(g1)] == [a.dtype for a in jax.tree.leaves(g_bf16)]
  y0, g0, s0 = _norm_step('xla', shape, act, x_dtype=jnp.bfloat16)  # float32 arithmetic, same inputs
  np.testing.assert_allclose(y1.astype(jnp.float32), y0, rtol=2 ** -7, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    np.testing.assert_allclose(a, b, rtol=2 ** -6, atol=2 ** -7 * max(float(jnp.abs(b).max()), 1e-6))
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_batch_norm_takes_flax_where_onednn_does_not_apply():
  """Evaluation (running averages), float16 data and cross-device statistics stay on flax's own batch norm."""
  bn = nnx.BatchNorm(8, rngs=nnx.Rngs(0))
  x = jnp.ones((4, 8))
  assert not norm.onednn_eligible(bn, x, True)
  assert not norm.onednn_eligible(bn, x.astype(jnp.float16), False)
  assert not norm.onednn_eligible(nnx.BatchNorm(8, axis_name='batch', rngs=nnx.Rngs(0)), x, False)
  graphdef, state = nnx.split(bn)
  train_bn = jax.jit(lambda s: layers.batch_norm_act(nnx.merge(graphdef, s), x, use_running_average=False))
  with ops.use_impl('onednn'):
    assert 'jaxssl_onednn_conv_bn_forward' in train_bn.lower(state).as_text()
  for impl in ('xla', 'im2col'):  # the setting, not only the call, decides
    with ops.use_impl(impl):
      assert 'jaxssl_onednn_conv_bn' not in train_bn.lower(state).as_text()
  y0, _, s0 = _norm_step('xla', (6, 8), 'relu', use_running_average=True)
  y1, _, s1 = _norm_step('onednn', (6, 8), 'relu', use_running_average=True)
  np.testing.assert_array_equal(y1, y0)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s0)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="act must be one of none, relu, not 'gelu'"):
    layers.batch_norm_act(bn, x, use_running_average=False, act='gelu')


@needs_onednn
def test_resnet_training_step_runs_its_batch_norms_on_onednn():
  """Every BatchNorm of a training ResNet forward/backward is oneDNN's call; evaluation keeps flax's."""
  model = ResNet(input_shape=(8, 8, 3), rngs=nnx.Rngs(0), stage_sizes=(1, 1, 1), stage_widths=(4, 8, 16),
                 imagenet_stem=False)   # resnet20's blocks at a quarter of its width, one a stage
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jnp.ones((2, 8, 8, 3))

  def loss(params, train):
    return jnp.sum(merge_model(graphdef, params, rest)(x, train=train)['pool'])

  with ops.use_impl('onednn'):
    text = jax.jit(jax.grad(lambda p: loss(p, True))).lower(params).as_text()
    evaluation = jax.jit(lambda p: loss(p, False)).lower(params).as_text()
  n_bn = sum(1 for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm))
  assert text.count('jaxssl_onednn_conv_bn_forward') == n_bn
  assert text.count('jaxssl_onednn_conv_bn_backward') == n_bn
  assert 'jaxssl_onednn_conv_bn' not in evaluation
