"""SimCLR and BYOL: the views (exact where a setting makes them exact, per-row draws), NT-Xent and BYOL's loss on
hand-worked values and their properties, the target network's moving average inside the jitted step, exact
resume, 8 devices giving the loss of one, and a few steps lowering each loss on real Fashion-MNIST."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, small_config
from flax import nnx

from jaxssl import sharding, trees
from jaxssl.data import fashion_mnist, pipeline, views
from jaxssl.tasks import build_tasks, byol as byol_lib
from jaxssl.tasks.contrastive import SimCLR, nt_xent as nt_xent_eager
from jaxssl.train import checkpoint as ckpt_lib, transfer
from jaxssl.train.experiment import build_experiment
from jaxssl.train.state import build_model

IDENTITY = views.ViewAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, jitter=0.0, grayscale=0.0)
nt_xent = jax.jit(nt_xent_eager)   # one dispatch per call, not one per operation
byol_loss = jax.jit(byol_lib.byol_loss)
STATS = {'mean': (fashion_mnist.MEAN,), 'std': (fashion_mnist.STD,)}


@pytest.fixture(scope='module')
def fmnist(fmnist_source_dir):  # pylint: disable=unused-argument  # sets $JAXSSL_FASHION_MNIST_DIR
  return fashion_mnist.load_arrays('test')[0][:64]


def colour_images(n=8, size=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- views


def test_identity_settings_give_the_images_back_and_random_views_differ(fmnist):
  np.testing.assert_array_equal(views.make_views(fmnist, np.random.default_rng(0), [IDENTITY])[:, 0], fmnist)
  out = SimCLR(**STATS).transform({'image': fmnist, 'weight': np.ones(64, np.float32)}, np.random.default_rng(0),
                                  train=True)
  assert out['image'].shape == (64, 2, 28, 28, 1) and out['image'].dtype == np.uint8
  again = SimCLR(**STATS).transform({'image': fmnist, 'weight': np.ones(64, np.float32)}, np.random.default_rng(0),
                                    train=False)
  np.testing.assert_array_equal(out['image'], again['image'])      # seeded: eval views are reproducible
  first, second = out['image'][:, 0].astype(int), out['image'][:, 1].astype(int)
  assert (np.abs(first - second).mean(axis=(1, 2, 3)) > 1).mean() > 0.9
  # Mirroring every image is exact.
  flipped = views.make_views(fmnist, np.random.default_rng(0), [views.ViewAugment(
      scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0, jitter=0.0)])[:, 0]
  np.testing.assert_array_equal(flipped, fmnist[:, :, ::-1])


def test_crop_boxes_fit_their_ranges_and_a_box_of_the_output_size_is_cut_exactly(fmnist):
  boxes = views.crop_boxes(np.random.default_rng(1), 500, (28, 28), (0.2, 1.0), (3 / 4, 4 / 3))
  y0, x0, h, w = boxes.T
  assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + h <= 28).all() and (x0 + w <= 28).all()
  area = h * w / 784
  assert area.min() > 0.15 and area.max() <= 1.0 and len(np.unique(boxes, axis=0)) > 300
  assert (np.abs(np.log(w / h)) <= math.log(4 / 3) + 0.15).all()   # the ratio, up to rounding to pixels
  boxes = np.stack([np.arange(64) % 15, np.arange(64) % 7, np.full(64, 14), np.full(64, 14)], axis=1)
  cut = views.resized_crop(fmnist, boxes, 14)
  for i in (0, 9, 63):
    np.testing.assert_allclose(cut[i], fmnist[i, boxes[i, 0]:boxes[i, 0] + 14, boxes[i, 1]:boxes[i, 1] + 14] / 255,
                               atol=1e-6)
  # An enlarged constant image stays constant.
  np.testing.assert_allclose(views.resized_crop(np.full((2, 10, 10, 3), 51, np.uint8), boxes[:2] % 3, 25), 0.2,
                             atol=1e-6)


@pytest.mark.parametrize('channels', [1, 3])
def test_each_row_gets_the_views_of_the_whole_batch_on_any_split_of_rows(channels):
  """The pipeline's rule: a process holding some rows of a global batch draws what one process would (at 96 px, where
  the blur's kernel width depends on sigma)."""
  images = colour_images(12, 100)[..., :channels]
  augment = views.ViewAugment(size=96, blur=0.5, solarize=0.3)
  whole = views.make_views(images, pipeline.RowGenerator(np.random.default_rng(5), np.arange(12), 12),
                           [augment, augment])
  for rows in (np.arange(6), np.arange(6, 12), np.asarray([1, 4, 11])):
    part = views.make_views(images[rows], pipeline.RowGenerator(np.random.default_rng(5), rows, 12),
                            [augment, augment])
    np.testing.assert_array_equal(part, whole[rows])


def test_colour_stages():
  images = colour_images()
  rng = np.random.default_rng(0)
  gray = views.random_view(images, rng, views.ViewAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, jitter=0.0,
                                                          grayscale=1.0))
  assert (gray == gray[..., :1]).all()
  solar = views.random_view(images, rng, views.ViewAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0,
                                                           jitter=0.0, grayscale=0.0, solarize=1.0))
  np.testing.assert_array_equal(solar, np.where(images >= 128, 255 - images, images))
  jittered = views.random_view(images, rng, views.ViewAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0,
                                                              jitter=1.0, grayscale=0.0))
  assert (jittered != images).any(axis=(1, 2, 3)).all()
  # Hue alone keeps the grey level of a grey image (the chroma it rotates is zero).
  grey = np.repeat(images[..., :1], 3, axis=-1)
  hue = views.color_jitter(grey / 255.0, rng, views.ViewAugment(jitter=1.0, brightness=0, contrast=0,
                                                                saturation=0, hue=0.5))
  np.testing.assert_allclose(hue, grey / 255.0, atol=1e-5)
  # Blur: a constant stays constant, an impulse spreads symmetrically and keeps its mass.
  const = np.full((2, 20, 20, 1), 0.3, np.float32)
  np.testing.assert_allclose(views.gaussian_blur(const, np.asarray([0.5, 2.0])), const, atol=1e-6)
  impulse = np.zeros((1, 21, 21, 1), np.float32)
  impulse[0, 10, 10] = 1.0
  blurred = views.gaussian_blur(impulse, np.asarray([1.0]))[0, ..., 0]
  assert blurred[10, 10] < 0.3 and np.isclose(blurred.sum(), 1.0, atol=1e-5)
  np.testing.assert_allclose(blurred, blurred[::-1, ::-1], atol=1e-7)
  np.testing.assert_allclose(blurred, blurred.T, atol=1e-7)


def test_bad_view_options_are_one_line():
  with pytest.raises(ValueError, match='crop scale'):
    SimCLR(**STATS, crop_scale=(0.5, 0.2))
  with pytest.raises(ValueError, match='blur_prob takes two numbers'):
    SimCLR(**STATS, blur_prob=(0.5,))
  with pytest.raises(ValueError, match='temperature'):
    SimCLR(**STATS, temperature=0.0)
  with pytest.raises(ValueError, match='base_momentum'):
    byol_lib.BYOL(**STATS, base_momentum=1.5)


# ---------------------------------------------------------------------------------------------------- losses


def test_nt_xent_hand_worked_values():
  # Two images, each view of an image identical to its partner and orthogonal to the other image: every anchor
  # sees its positive at cosine 1 and two negatives at 0, so the loss is -log(e^(1/T) / (e^(1/T) + 2)).
  z = jnp.eye(2)
  for t in (1.0, 0.5):
    loss, metrics = nt_xent(z, 3.0 * z, t, jnp.ones(2))   # scale does not matter: cosines
    np.testing.assert_allclose(loss, math.log(1 + 2 * math.exp(-1 / t)), rtol=1e-6)
    assert float(metrics['acc']) == 1.0
  # Partners swapped: every anchor's positive is orthogonal to it (logit 0), one negative equals it (logit 1), the
  # other is orthogonal (0), so at T = 1 the loss is -log(1 / (1 + e + 1)) and no anchor finds its partner.
  z1, z2 = jnp.asarray([[1.0, 0.0], [0.0, 1.0]]), jnp.asarray([[0.0, 1.0], [1.0, 0.0]])
  loss, metrics = nt_xent(z1, z2, 1.0, jnp.ones(2))
  np.testing.assert_allclose(loss, math.log(math.e + 2), rtol=1e-6)
  assert float(metrics['acc']) == 0.0


def test_nt_xent_ignores_batch_order_and_padding_and_is_sharp_at_low_temperature():
  rng = np.random.default_rng(0)
  z1 = rng.normal(size=(16, 8)).astype(np.float32)
  z2 = (z1 + 0.3 * rng.normal(size=(16, 8))).astype(np.float32)
  loss, metrics = nt_xent(z1, z2, 0.5, jnp.ones(16))
  perm = rng.permutation(16)
  loss_perm, metrics_perm = nt_xent(z1[perm], z2[perm], 0.5, jnp.ones(16))
  np.testing.assert_allclose(loss_perm, loss, rtol=1e-6)
  np.testing.assert_allclose(metrics_perm['acc'], metrics['acc'])
  # Padding rows (weight 0) are neither anchors nor negatives, whatever they hold.
  pad = rng.normal(size=(5, 8)).astype(np.float32)
  padded = nt_xent(np.concatenate([z1, pad]), np.concatenate([z2, pad]), 0.5,
                   jnp.concatenate([jnp.ones(16), jnp.zeros(5)]))[0]
  np.testing.assert_allclose(padded, loss, rtol=1e-6)
  grads = jax.grad(lambda a: nt_xent(a, z2, 0.5, jnp.ones(16))[0])(jnp.asarray(z1))
  assert bool(jnp.isfinite(grads).all())
  # Temperature: with partners closer than any negative, a lower temperature lowers the loss towards 0; a very
  # high one makes every candidate alike: log(2N - 1).
  z2 = (z1 + 0.01 * rng.normal(size=(16, 8))).astype(np.float32)
  losses = [float(nt_xent(z1, z2, t, jnp.ones(16))[0]) for t in (10.0, 1.0, 0.3, 0.1, 0.02)]
  assert all(a > b for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < 1e-3
  np.testing.assert_allclose(nt_xent(z1, z2, 1e4, jnp.ones(16))[0], math.log(31), rtol=1e-3)


def test_byol_loss_is_zero_when_prediction_equals_target_and_symmetric():
  rng = np.random.default_rng(0)
  p1, p2 = rng.normal(size=(2, 6, 4)).astype(np.float32)
  loss, metrics = byol_loss(p1, p2, 2.0 * p2, 0.5 * p1, jnp.ones(6))   # p1 predicts z2, p2 predicts z1
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)
  np.testing.assert_allclose(metrics['cos'], 1.0, atol=1e-6)
  e = jnp.eye(4)[:2]
  # Orthogonal: 2 per direction; opposite: 4 per direction.
  np.testing.assert_allclose(byol_loss(e, e, e[::-1], e[::-1], jnp.ones(2))[0], 4.0, rtol=1e-6)
  np.testing.assert_allclose(byol_loss(e, e, -e, -e, jnp.ones(2))[0], 8.0, rtol=1e-6)
  # Symmetric: swapping the views swaps the two terms; the target gets no gradient.
  z1, z2 = rng.normal(size=(2, 6, 4)).astype(np.float32)
  w = jnp.asarray([1, 1, 0, 1, 1, 1], jnp.float32)
  np.testing.assert_allclose(byol_loss(p1, p2, z1, z2, w)[0], byol_loss(p2, p1, z2, z1, w)[0],
                             rtol=1e-6)
  assert not np.asarray(jax.grad(lambda z: byol_loss(p1, p2, z, z2, w)[0])(jnp.asarray(z1))).any()


def test_target_momentum_schedule_and_ema_are_exact():
  assert float(byol_lib.target_momentum(0, 100, 0.996)) == pytest.approx(0.996)
  assert float(byol_lib.target_momentum(50, 100, 0.996)) == pytest.approx(0.998, abs=1e-7)
  assert float(byol_lib.target_momentum(100, 100, 0.996)) == pytest.approx(1.0)
  assert float(byol_lib.target_momentum(7, 0, 0.99)) == pytest.approx(0.99)   # no run length: the base
  target, online = {'a': jnp.asarray([1.0, 2.0]), 'b': jnp.asarray(4.0)}, {'a': jnp.asarray([3.0, 0.0]),
                                                                          'b': jnp.asarray(0.0)}
  moved = byol_lib.ema_update(target, online, 0.75)
  np.testing.assert_array_equal(moved['a'], [1.5, 1.5])
  np.testing.assert_array_equal(moved['b'], 3.0)


# ------------------------------------------------------------------------------------------ steps and runs


def _config(tfds_dir, task, **overrides):
  c = small_config(tfds_dir, **{'batch_size': 32, 'data.eval_limit': 32, 'eval_batch_size': 32, **overrides})
  del c.tasks.classify
  options = {'crop_scale': (0.2, 1.0), 'proj_hidden': 64, 'proj_dim': 32}
  if task == 'byol':
    options.update(pred_hidden=64, blur_sigma=(0.1, 1.0))
  c.tasks[task] = options
  c.optim.name, c.optim.lr, c.optim.nesterov, c.optim.weight_decay = 'lars', 0.5, False, 1e-6
  c.evals.filters, c.evals.curves = {'enabled': False}, {'enabled': False}   # pictures: not what is tested
  return c


def _target(state):
  """The target's weights and the online weights they follow, as {path: array} on the host (a KeyError if the
  target lacks one)."""
  head = state.model_state['heads']['byol']

  def flat(tree):
    return {k: np.asarray(v) for k, v in trees.flat_paths(tree).items()}

  online = flat({'backbone': state.params['backbone'], 'projector': state.params['heads']['byol']['projector']})
  target = flat({'backbone': head['target_backbone'], 'projector': head['target_projector']})
  return {k: target[k] for k in online}, online   # the target's own BatchNorm statistics left out


def _steps(exp, batches, count, state=None):
  """``count`` train steps from ``state`` (default: the experiment's; the step donates it) on ``batches``
  (cycled); the state and the losses."""
  state, losses = exp.state if state is None else state, []
  for i in range(count):
    state, metrics = exp.train_step(state, sharding.shard_batch(batches[i % len(batches)], exp.mesh),
                                    jax.random.PRNGKey(0))
    losses.append(float(metrics['loss']))
  return state, losses


def _batches(exp, count):
  it = pipeline.train_iterator(exp.train_source, exp.tasks, global_batch=exp.config.batch_size, seed=0,
                               mesh=exp.mesh)
  return [next(it) for _ in range(count)]


@pytest.fixture(scope='module')
def byol(tfds_dir):
  """A BYOL experiment on real Fashion-MNIST, compiled once for the tests below."""
  return build_experiment(_config(tfds_dir, 'byol', total_steps=40))


def test_byol_target_follows_the_online_weights_inside_the_step_and_the_loss_falls(byol):
  # The target is state, not parameters: the optimizer never sees it.
  assert not any('target' in str(p) for p, _ in jax.tree_util.tree_leaves_with_path(byol.state.params))
  batches = _batches(byol, 1)
  theta0 = _target(byol.state)[1]
  s1, _ = _steps(byol, batches, 1, jax.tree.map(jnp.copy, byol.state))
  target1, theta1 = _target(s1)
  for key, value in target1.items():   # step 0: the target starts as the online network it follows
    np.testing.assert_array_equal(value, theta0[key])
  s2, _ = _steps(byol, batches, 1, s1)
  tau = 1 - (1 - 0.996) * (math.cos(math.pi * 1 / 40) + 1) / 2
  for key, value in _target(s2)[0].items():
    np.testing.assert_allclose(value, tau * target1[key] + (1 - tau) * theta1[key], rtol=1e-6, atol=1e-7)
  # The same real images again: the prediction learns the target's projection.
  _, losses = _steps(byol, batches, 10, s2)
  assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_byol_copies_the_online_weights_at_its_first_kept_update_not_at_step_zero(byol):
  """A non-finite step 0 is rolled back (the update counter with it) while the step count moves on: the first
  step that counts, here step 1, still starts the target as a copy of the online network (after init_from, the
  loaded backbone), not as an average with the random initial copy."""
  batches = _batches(byol, 1)
  fresh = jax.tree.map(jnp.copy, byol.state)
  theta0 = _target(fresh)[1]
  state = dataclasses.replace(fresh, step=jnp.ones_like(fresh.step))   # as after a rolled-back step 0
  s1, _ = _steps(byol, batches, 1, state)
  for key, value in _target(s1)[0].items():
    np.testing.assert_array_equal(value, theta0[key])
  assert int(s1.model_state['heads']['byol']['ema_updates'].get_value()) == 1


def test_byol_resumes_exactly_and_its_backbone_transfers(byol, tfds_dir, tmp_path):
  """The target network is checkpointed with the train state: 3 steps, a checkpoint, 3 more steps equal 3 steps
  restored from that checkpoint into a fresh state and data iterator, then 3 more, to the last bit."""
  def iterator():
    return pipeline.train_iterator(byol.train_source, byol.tasks, global_batch=32, seed=0, mesh=byol.mesh)

  def run(state, it, count):
    losses = []
    for _ in range(count):
      state, metrics = byol.train_step(state, sharding.shard_batch(next(it), byol.mesh), jax.random.PRNGKey(0))
      losses.append(float(metrics['loss']))
    return state, losses

  it = iterator()
  state, _ = run(jax.tree.map(jnp.copy, byol.state), it, 3)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'))
  ckpt.save(3, state, it)
  ckpt.wait()
  straight, straight_losses = run(state, it, 3)
  fresh = build_experiment(byol.config, load_init=False)     # another run's untrained state, built anew
  it = iterator()
  restored, _ = ckpt.restore(None, fresh.state, sharding.replicated(byol.mesh), data_iter=it)
  ckpt.close()
  saved_backbone = {k: np.asarray(v) for k, v in trees.flat_paths(restored.params['backbone']).items()}
  resumed, resumed_losses = run(restored, it, 3)
  assert resumed_losses == straight_losses
  for a, b in zip(_target(straight), _target(resumed)):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # The target lives under its head: a classifier takes the online backbone, as from any other run.
  classify = small_config(tfds_dir)
  classifier = build_model(classify.model, (28, 28, 1), build_tasks(classify.tasks, byol.info)[0], seed=1)
  transfer.load_backbone(classifier, str(tmp_path / 'checkpoints' / '3'))
  loaded = trees.flat_paths(nnx.state(classifier.backbone, nnx.Param))
  assert loaded.keys() == saved_backbone.keys()
  for key, value in loaded.items():
    np.testing.assert_array_equal(value, saved_backbone[key])


def _simclr_losses_on_cpu_devices(devices, tfds_dir, overrides):
  """The first three SimCLR losses, in a process of its own on ``devices`` CPU devices."""
  script = (
      'import json, sys; sys.path.insert(0, %r); sys.path.insert(0, %r)\n'
      'import jax\n'
      'from test_contrastive import _batches, _config, _steps\n'
      'from jaxssl.train.experiment import build_experiment\n'
      'exp = build_experiment(_config(%r, "simclr", **%r))\n'
      'print(json.dumps({"devices": jax.device_count(), "platform": jax.default_backend(),\n'
      '                  "losses": _steps(exp, _batches(exp, 3), 3)[1]}))\n') % (
          str(REPO / 'tests'), str(REPO), tfds_dir, overrides)
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}', 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert (result['devices'], result['platform']) == (devices, 'cpu')
  return result['losses']


def test_simclr_sees_the_whole_global_batch_on_eight_devices_and_its_loss_falls(tfds_dir):
  """Negatives from the whole global batch: the same SimCLR steps on 1 and on 8 (fake) CPU devices compute the
  same losses (a per-device loss would have 8x fewer negatives and differ); both on the CPU, whatever this
  process runs on (a GPU's TF32 convolutions would differ by more than float32 rounding). Then a few steps on
  the same real images lower the loss."""
  overrides = {'total_steps': 40}
  exp = build_experiment(_config(tfds_dir, 'simclr', **overrides))
  batches = _batches(exp, 3)
  state, one = _steps(exp, batches, 3)
  if jax.default_backend() != 'cpu' or jax.device_count() != 1:  # this process cannot be the one-device run
    one = _simclr_losses_on_cpu_devices(1, tfds_dir, overrides)
  np.testing.assert_allclose(_simclr_losses_on_cpu_devices(8, tfds_dir, overrides), one, rtol=2e-5)
  _, losses = _steps(exp, batches[:1], 10, state)
  assert losses[0] > 3.0 and np.mean(losses[-3:]) < losses[0] - 0.3, losses
