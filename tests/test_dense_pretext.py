"""Dense pretext tasks (autoencoder, denoising, inpainting, colorization) on real images: every target matches its
transform, the noise and the mask sit only where configured, the backbone never sees removed pixels, CIE Lab
round-trips and matches reference values, the losses match hand-worked values, a few steps lower each loss, the
pipeline resumes exactly, and an autoencoder checkpoint feeds the linear probe unchanged."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import REPO
from configs import fmnist_autoencoder, fmnist_benchmark, fmnist_linear
from jaxssl.data import color, datasets, fashion_mnist, pipeline
from jaxssl.models import build_backbone
from jaxssl.tasks import autoencoder as ae_lib
from jaxssl.tasks import build_tasks
from jaxssl.tasks import colorization as col_lib
from jaxssl.tasks.autoencoder import Autoencoder
from jaxssl.tasks.colorization import Colorization
from jaxssl.tasks.decoder import default_feature, psnr
from jaxssl.tasks.inpainting import Inpainting
from jaxssl import benchmark, trees
from jaxssl.train import experiment, loop, transfer

STATS = {'mean': (fashion_mnist.MEAN,), 'std': (fashion_mnist.STD,)}
RGB_STATS = {'mean': (0.6, 0.55, 0.55), 'std': (0.3, 0.3, 0.3)}


@pytest.fixture(scope='module')
def fmnist(fmnist_source_dir):  # pylint: disable=unused-argument  # sets $JAXSSL_FASHION_MNIST_DIR
  return fashion_mnist.load_arrays('test')[0]


@pytest.fixture(scope='module')
def photos(deepfashion_sample, tmp_path_factory):
  """The real DeepFashion attribute sample's training images, prepared at 32 px (colour, uint8 [287, 32, 32, 3])."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict({'source_dir': deepfashion_sample, 'data_dir': str(tmp_path_factory.mktemp('df')),
                                   'image_size': 32, 'crop_bbox': False, 'image_format': 'png',
                                   'prepare_workers': 2})
  info = datasets.get_dataset('deepfashion_attr', cfg)
  source = datasets.load_split(info, 'train', cfg)
  return np.stack([np.asarray(source[i]['image']) for i in range(len(source))])


def raw(images, n=32, start=0):
  return {'image': images[start:start + n], 'weight': np.ones(len(images[start:start + n]), np.float32)}


def rng(seed=0):
  return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------ autoencoder


def test_plain_autoencoder_target_and_input_are_the_image(fmnist):
  out = Autoencoder(**STATS).transform(raw(fmnist), rng(), train=False)
  assert set(out) == {'image', 'target', 'weight'} and out['image'].dtype == np.uint8
  np.testing.assert_array_equal(out['image'], fmnist[:32])
  np.testing.assert_array_equal(out['target'], fmnist[:32])


@pytest.mark.parametrize('noise,level', [('gaussian', 0.2), ('masking', 0.25), ('salt_pepper', 0.1)])
def test_noise_is_what_was_configured_and_the_target_stays_clean(fmnist, noise, level):
  task = Autoencoder(**STATS, noise=noise, noise_level=level)
  out = task.transform(raw(fmnist, n=256), rng(1), train=False)
  clean, noisy = fmnist[:256].astype(np.int64), out['image'].astype(np.int64)
  np.testing.assert_array_equal(out['target'], fmnist[:256])
  changed = noisy != clean
  if noise == 'gaussian':
    mid = (clean > 80) & (clean < 175)     # far from 0 and 255: clipping does not cut the noise there
    assert abs(np.std(noisy[mid] - clean[mid]) - 255 * level) < 0.05 * 255 * level
    assert abs(np.mean(noisy[mid] - clean[mid])) < 1.0
    assert changed[mid].mean() > 0.98 and (noisy[clean == 0] > 0).mean() > 0.45   # black gains only light
  elif noise == 'masking':
    assert (noisy[changed] == 0).all()                     # only zeros are written
    assert abs((noisy[clean > 0] == 0).mean() - level) < 0.01   # on a pixel that had ink, with chance level
  else:
    assert np.isin(noisy[changed], (0, 255)).all()
    hit = np.isin(noisy, (0, 255)) & ~np.isin(clean, (0, 255))
    assert abs(hit.mean() / (~np.isin(clean, (0, 255))).mean() - level) < 0.01   # grey pixels hit with chance level
    grey_hit = changed & ~np.isin(clean, (0, 255))
    assert 0.45 < (noisy[grey_hit] == 255).mean() < 0.55                          # salt or pepper, even odds
  # Different images get different noise; the same seed the same.
  assert not np.array_equal(changed[0], changed[1])
  np.testing.assert_array_equal(task.transform(raw(fmnist, n=256), rng(1), train=False)['image'], out['image'])


def test_autoencoder_losses_on_hand_worked_values():
  target = np.array([[[0, 255], [51, 102]], [[255, 255], [255, 255]]], np.uint8)[..., None]   # [2, 2, 2, 1]
  batch = {'image': target, 'target': target, 'weight': np.array([1.0, 0.0], np.float32)}
  out = jnp.full((2, 2, 2, 1), 0.5)
  loss, m = Autoencoder(**STATS).loss(out, batch)
  # image 0 only (weight 0 for image 1): (0.25 + 0.25 + 0.09 + 0.01) / 4 = 0.15
  np.testing.assert_allclose(float(loss), 0.15, rtol=1e-6)
  np.testing.assert_allclose(float(m['mse']), 0.15, rtol=1e-6)
  np.testing.assert_allclose(float(m['psnr']), 10 * np.log10(1 / 0.15), rtol=1e-5)
  # BCE of logit 0 is log 2 whatever the target; the reconstruction is sigmoid(0) = 0.5 (the same mse).
  loss, m = Autoencoder(**STATS, reconstruction_loss='bce').loss(jnp.zeros((2, 2, 2, 1)), batch)
  np.testing.assert_allclose(float(loss), np.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(float(m['mse']), 0.15, rtol=1e-6)
  # The MSE output is clipped to [0, 1] for the metrics, not for the loss.
  loss, m = Autoencoder(**STATS).loss(jnp.full((2, 2, 2, 1), 2.0), batch)
  np.testing.assert_allclose(float(loss), (4 + 1 + 1.8 ** 2 + 1.6 ** 2) / 4, rtol=1e-6)
  np.testing.assert_allclose(float(m['mse']), (1 + 0 + 0.64 + 0.36) / 4, rtol=1e-6)
  # Denoising also reports what the noisy input scores: here the input is off by 51/255 = 0.2 everywhere.
  noisy = {**batch, 'image': np.clip(target.astype(int) - 51, 0, 255).astype(np.uint8)}
  noisy['image'][0, 0, 0] = 0   # 0 - 51 clips to 0: that pixel is exact
  _, m = Autoencoder(**STATS, noise='gaussian').loss(out, noisy)
  np.testing.assert_allclose(float(m['noisy_psnr']), 10 * np.log10(1 / (3 * 0.04 / 4)), rtol=1e-5)
  assert float(psnr(jnp.asarray(0.0))) == 100.0


# ------------------------------------------------------------------------------------------- inpainting


def test_center_mask_removes_exactly_the_centre_and_the_target_is_what_was_removed(fmnist):
  task = Inpainting(**STATS, mask='center', mask_size=0.5, fill='mean')
  out = task.transform(raw(fmnist), rng(), train=False)
  mask = out['mask'][..., 0].astype(bool)
  expected = np.zeros((28, 28), bool)
  expected[7:21, 7:21] = True
  assert (mask == expected).all()
  np.testing.assert_array_equal(out['target'], fmnist[:32])                       # the original, all of it
  np.testing.assert_array_equal(out['image'][:, ~expected], fmnist[:32][:, ~expected])   # the rest untouched
  fill = round(255 * fashion_mnist.MEAN)
  assert (out['image'][:, expected] == fill).all()                               # the hole holds the mean grey
  assert (out['target'][:, expected] != fill).any()


@pytest.mark.parametrize('fill', ['zero', 'noise'])
def test_random_blocks_differ_per_image_and_only_the_blocks_change(fmnist, fill):
  task = Inpainting(**STATS, mask='blocks', mask_size=0.25, num_blocks=3, fill=fill)
  out = task.transform(raw(fmnist, n=64), rng(3), train=False)
  mask = out['mask'][..., 0].astype(bool)
  side = 7
  area = mask.sum(axis=(1, 2))
  assert (area >= side * side).all() and (area <= 3 * side * side).all()
  assert len({m.tobytes() for m in mask}) > 50                                  # a new place for every image
  np.testing.assert_array_equal(out['image'][~mask], fmnist[:64][~mask])
  if fill == 'zero':
    assert (out['image'][mask] == 0).all()
  else:
    assert out['image'][mask].std() > 60                                         # uniform values, not the image


@pytest.mark.parametrize('mask', ['center', 'blocks'])
def test_the_backbone_never_sees_the_removed_pixels(fmnist, mask):
  task = Inpainting(**STATS, mask=mask, fill='noise')
  out = task.transform(raw(fmnist, n=16), rng(5), train=True)
  removed = out['mask'][..., 0].astype(bool)
  other = fmnist[:16].copy()
  other[removed] = 255 - other[removed]            # change every removed pixel's original value
  again = task.transform(raw(other, n=16), rng(5), train=True)
  np.testing.assert_array_equal(again['mask'], out['mask'])
  np.testing.assert_array_equal(again['image'], out['image'])
  assert not np.array_equal(again['target'], out['target'])

  seen = []

  class Spy:
    """Records what the backbone is fed."""
    output_name = 'pool2'

    def __call__(self, x, *, train, rng):
      seen.append(np.asarray(x))
      return {'pool2': jnp.zeros((x.shape[0], 7, 7, 4))}

  def head(features):
    return features['pool2']

  task.forward(Spy(), head, out, train=False, rng=None)
  task.forward(Spy(), head, again, train=False, rng=None)
  np.testing.assert_array_equal(seen[0], seen[1])


def test_inpainting_loss_on_hand_worked_values():
  target = np.zeros((2, 2, 2, 1), np.uint8)
  target[0, 0, 0] = 255
  mask = np.zeros((2, 2, 2, 1), np.uint8)
  mask[0, 0, :] = 1                                # image 0: the top row (pixels 255 and 0); image 1: nothing
  image = np.where(mask.astype(bool), np.uint8(127), target)
  batch = {'image': image, 'target': target, 'mask': mask, 'weight': np.array([1.0, 1.0], np.float32)}
  out = jnp.full((2, 2, 2, 1), 0.5)
  loss, m = Inpainting(**STATS).loss(out, batch)
  # image 0: masked mean of (0.25, 0.25) = 0.25; image 1 has no masked pixel: 0 (its own mean over 0 pixels)
  np.testing.assert_allclose(float(loss), (0.25 + 0.0) / 2, rtol=1e-6)
  fill = (np.square(127 / 255 - 1) + np.square(127 / 255)) / 2
  np.testing.assert_allclose(float(m['fill_mse']), fill / 2, rtol=1e-5)
  # The context term: image 0's unmasked pixels are (0, 0) -> 0.25 each; image 1's four -> 0.25.
  loss, _ = Inpainting(**STATS, context_weight=0.1).loss(out, batch)
  np.testing.assert_allclose(float(loss), (0.25 + 0.1 * 0.25 + 0.0 + 0.1 * 0.25) / 2, rtol=1e-6)


# ------------------------------------------------------------------------------------------ colour / Lab


def test_lab_reference_values_and_round_trip(photos):
  rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]], np.uint8)
  reference = np.array([[100, 0, 0], [0, 0, 0], [53.2408, 80.0925, 67.2032], [87.7347, -86.1827, 83.1793],
                        [32.2970, 79.1875, -107.8602], [53.5850, 0, 0]])   # CIE L*a*b* (D65) of sRGB
  np.testing.assert_allclose(color.rgb_to_lab(rgb), reference, atol=2e-3)
  for images in (photos, np.random.default_rng(0).integers(0, 256, (20000, 3)).astype(np.uint8)):
    back = color.to_uint8(color.lab_to_rgb(color.rgb_to_lab(images)))
    np.testing.assert_array_equal(back, images)
    np.testing.assert_allclose(color.lab_to_rgb(color.rgb_to_lab(images / 255.0)), images / 255.0, atol=1e-6)


def test_ab_bins_cover_srgb_and_the_soft_encoding_is_the_nearest_bins():
  bins = col_lib.ab_bins(10.0)
  assert bins.shape == (261, 2) and (bins % 10 == 0).all()
  # Every colour of a 52-level sample of the whole cube (interior included) falls in a bin.
  levels = np.round(np.linspace(0, 255, 52)).astype(np.uint8)
  cube = np.stack(np.meshgrid(levels, levels, levels), -1).reshape(-1, 3)
  cells = {tuple(c) for c in np.round(color.rgb_to_lab(cube)[:, 1:] / 10).astype(int) * 10}
  assert cells <= {tuple(b) for b in bins.astype(int)}
  ab = np.random.default_rng(0).uniform(-100, 100, (500, 2))
  index, weight = col_lib.encode(ab, 10.0, 5, 5.0)
  assert index.shape == weight.shape == (500, 5)
  np.testing.assert_allclose(weight.sum(-1), 1.0, rtol=1e-6)
  d = np.linalg.norm(np.round(ab)[:, None] - bins[None], axis=-1)
  np.testing.assert_allclose(np.take_along_axis(d, index[:, :1].astype(int), axis=1)[:, 0], d.min(axis=1))
  assert (np.diff(np.take_along_axis(d, index.astype(int), axis=1), axis=1) >= -1e-9).all()   # nearest first
  assert (np.diff(weight, axis=1) <= 1e-7).all()


def test_colorization_targets_are_the_image_lab(photos):
  task = Colorization(**RGB_STATS, output_stride=4)
  out = task.transform(raw(photos, n=8), rng(), train=False)
  assert out['image'].shape == (8, 32, 32, 1) and out['ab'].shape == (8, 8, 8, 2)
  assert out['bins'].shape == (8, 8, 8, 5) and out['bins'].dtype == np.int16
  lab = color.rgb_to_lab(photos[:8])
  # The grey input has the image's lightness (to the uint8 grey's precision)...
  grey_l = color.rgb_to_lab(np.repeat(out['image'], 3, axis=-1))[..., 0]
  assert np.abs(grey_l - lab[..., 0]).max() < 0.5
  # ... and the target is the mean ab of each 4x4 block.
  for i, y, x in [(0, 0, 0), (3, 5, 2), (7, 7, 7)]:
    np.testing.assert_allclose(out['ab'][i, y, x], lab[i, 4 * y:4 * y + 4, 4 * x:4 * x + 4, 1:].mean(axis=(0, 1)),
                               atol=1e-3)
  index, _ = col_lib.encode(out['ab'], 10.0, 5, 5.0)
  np.testing.assert_array_equal(out['bins'], index)
  assert np.abs(out['ab']).max() > 20            # the sample's photos have colour to predict
  regression = Colorization(**RGB_STATS, mode='regression').transform(raw(photos, n=8), rng(), train=False)
  assert set(regression) == {'image', 'ab', 'weight'}


def test_colorization_refuses_greyscale_data_in_one_line(fmnist):
  info = datasets.get_dataset('fashion_mnist')
  import ml_collections  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"task 'colorization' needs colour \(RGB\) input.*1 channel"):
    build_tasks(ml_collections.ConfigDict({'colorization': {}}), info)
  with pytest.raises(ValueError, match='needs colour'):
    Colorization(**RGB_STATS).transform(raw(fmnist[..., None] if fmnist.ndim == 3 else fmnist), rng(), train=True)


def test_a_command_on_greyscale_data_ends_with_one_line(tmp_path, tfds_dir):
  """Through the command, as a user meets it: one line, exit 2, no traceback."""
  (tmp_path / 'grey_colorization.py').write_text(
      'import ml_collections\nfrom configs import common\n\n\ndef get_config(arg=""):\n  del arg\n'
      '  c = common.base_config()\n  c.tasks.colorization = ml_collections.ConfigDict({})\n  return c\n',
      encoding='utf-8')
  out = subprocess.run([sys.executable, '-m', 'jaxssl.main', '--config', str(tmp_path / 'grey_colorization.py'),
                        '--workdir', str(tmp_path / 'run'), f'--config.data.data_dir={tfds_dir}'],
                       cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)}, capture_output=True, text=True,
                       timeout=300, check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.strip().splitlines()[-1].startswith("error: task 'colorization' needs colour (RGB) input")
  assert 'Traceback' not in out.stderr


def test_class_rebalancing_weights_and_prior(photos):
  # Hand-worked: two bins, no smoothing, all mass on bin 0, lambda 0.5: w ~ (1/0.75, 1/0.25), E_p[w] = 1.
  np.testing.assert_allclose(col_lib.rebalancing_weights(np.array([1.0, 0.0]), np.eye(2), 0.5), [1.0, 3.0],
                             rtol=1e-6)
  np.testing.assert_allclose(col_lib.rebalancing_weights(np.ones(4), np.eye(4), 0.5), np.ones(4), rtol=1e-6)
  source = [{'image': im} for im in photos]
  task = Colorization(**RGB_STATS, train_source=source, prior_images=100)
  assert task.train_source is None                            # held no longer than needed
  prior = task.artifacts()['ab_prior.npy']
  np.testing.assert_allclose(prior.sum(), 1.0)
  grey_bin = int(np.argmin(np.linalg.norm(task.bins, axis=1)))
  assert prior.argmax() == grey_bin                            # clothes photos: mostly grey pixels
  w = task.class_weight
  smoothed = col_lib.smoothing_matrix(10.0, 5.0) @ prior
  np.testing.assert_allclose(np.sum(smoothed * w), 1.0, rtol=1e-5)
  assert w[grey_bin] < 1 < w.max() <= 1 / (0.5 / len(w)) + 1e-3   # common colours down, rare ones up (bounded)
  with pytest.raises(ValueError, match='set_prior'):
    _ = Colorization(**RGB_STATS).class_weight


def test_colorization_loss_and_accuracy_on_hand_worked_values():
  task = Colorization(**RGB_STATS)
  q = len(task.bins)
  ab = np.zeros((2, 1, 2, 2), np.float32)
  ab[0, 0, 1] = [30.0, 40.0]                       # distance 50 from grey
  bins, weights = col_lib.encode(ab, 10.0, 5, 5.0)
  batch = {'ab': ab, 'bins': bins, 'bin_weights': weights, 'weight': np.array([1.0, 0.0], np.float32)}
  class_weight = np.ones(q, np.float32)
  class_weight[bins[0, 0, 1, 0]] = 3.0             # the coloured pixel's bin counts 3x
  outputs = {'logits': jnp.zeros((2, 1, 2, q)), 'class_weight': jnp.asarray(class_weight)}
  loss, m = task.loss(outputs, batch)
  np.testing.assert_allclose(float(loss), (np.log(q) + 3 * np.log(q)) / 2, rtol=1e-5)
  # Logits peaked on the grey bin predict (0, 0): the grey pixel is exact, the coloured one 50 away.
  grey_bin = int(np.argmin(np.linalg.norm(task.bins, axis=1)))
  peaked = jnp.zeros((2, 1, 2, q)).at[..., grey_bin].set(50.0)
  _, m = task.loss({**outputs, 'logits': peaked}, batch)
  np.testing.assert_allclose(float(m['acc']), 0.5, rtol=1e-5)
  np.testing.assert_allclose(float(m['auc']), (1.0 + (1 - 50 / 150)) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(m['gray_acc']), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(m['gray_auc']), (1.0 + (1 - 50 / 150)) / 2, rtol=1e-5)
  # Regression: squared error of ab / 100; predicting (30, 40) everywhere is exact on pixel 1, 0.25 off on pixel 0.
  reg = Colorization(**RGB_STATS, mode='regression')
  loss, m = reg.loss({'ab': jnp.broadcast_to(jnp.asarray([30.0, 40.0]), (2, 1, 2, 2))}, batch)
  np.testing.assert_allclose(float(loss), (0.25 + 0.0) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(m['acc']), 0.5, rtol=1e-6)


# ------------------------------------------------------------------------------------- steps and resume


def test_a_few_steps_lower_both_colorization_losses(photos):
  """Classification and regression heads on one small backbone (CifarNet, 3 channels), a fixed batch of 8 real
  photos, Adam: both losses fall."""
  import optax  # pylint: disable=import-outside-toplevel
  classify = Colorization(**RGB_STATS, output_stride=2, decoder_width=16, decoder_min_width=16)
  classify.set_prior(col_lib.empirical_prior([{'image': im} for im in photos[:64]], 64, 2, 10.0))
  regress = Colorization(**RGB_STATS, name='regression', mode='regression', output_stride=2, decoder_width=16,
                         decoder_min_width=16)
  tasks = (classify, regress)
  batch = {t.name: t.transform(raw(photos, n=8), rng(), train=True) for t in tasks}

  def build():
    backbone = build_backbone('cifarnet', input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
    return nnx.Dict({'backbone': backbone, **{t.name: t.make_head(backbone, (32, 32, 3), nnx.Rngs(1)) for t in tasks}})
  graphdef, params, rest = nnx.split(nnx.jit(build)(), nnx.Param, ...)

  def loss_fn(params):
    model = nnx.merge(graphdef, params, rest, copy=True)
    losses = {t.name: t.loss(t.forward(model['backbone'], model[t.name], batch[t.name], train=True, rng=None),
                             batch[t.name])[0] for t in tasks}
    return sum(losses.values()), losses

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  tx = optax.adam(2e-3)

  @jax.jit
  def step(params, opt):
    (_, losses), grads = grad_fn(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, losses

  params, opt, first = step(params, tx.init(params))   # the losses before any update
  for _ in range(8):
    params, opt, last = step(params, opt)   # the last: after 8 updates
  assert float(last['colorization']) < 0.8 * float(first['colorization']), (first, last)
  assert float(last['regression']) < 0.95 * float(first['regression']), (first, last)


def test_the_decoder_reads_a_middle_feature_and_makes_the_input_size():
  shapes = {'cifarnet': (28, 28, 1), 'alexnet': (112, 112, 3), 'resnet20': (32, 32, 1)}
  expected = {'cifarnet': 'pool2', 'alexnet': 'conv5', 'resnet20': 'stage3'}
  for name, shape in shapes.items():
    task = Autoencoder(mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1])

    def build(name=name, shape=shape, task=task):
      backbone = build_backbone(name, input_shape=shape, rngs=nnx.Rngs(0))
      return backbone, task.make_head(backbone, shape, nnx.Rngs(1))
    backbone, head = nnx.eval_shape(build)
    assert default_feature(backbone) == head.feature == expected[name]
    out = jax.eval_shape(lambda b, h, x: h(b(x)), backbone, head, jax.ShapeDtypeStruct((2, *shape), jnp.float32))
    assert out.shape == (2, *shape)
  with pytest.raises(ValueError, match="no feature 'conv9'"):
    nnx.eval_shape(lambda: Autoencoder(**STATS, feature='conv9').make_head(
        build_backbone('cifarnet', input_shape=(28, 28, 1), rngs=nnx.Rngs(0)), (28, 28, 1), nnx.Rngs(1)))


def _records(images, n):
  return [{'image': images[i]} for i in range(n)]


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_pipeline_resumes_exactly_and_draws_per_row(fmnist, photos):
  for images, tasks in (
      (fmnist, [Autoencoder(**STATS, noise='gaussian', flip=True, crop_padding=2),
                Autoencoder(**STATS, name='dae', noise='salt_pepper'),
                Inpainting(**STATS, mask='blocks', fill='noise')]),
      (photos, [Colorization(**RGB_STATS, flip=True), Inpainting(**RGB_STATS)])):
    source = _records(images, 96)
    it = pipeline.train_iterator(source, tasks, global_batch=32, seed=3)
    _ = [next(it) for _ in range(2)]
    saved = it.get_state()
    rest = [next(it) for _ in range(3)]
    resumed = pipeline.train_iterator(source, tasks, global_batch=32, seed=3)
    resumed.set_state(saved)
    _assert_same([next(resumed) for _ in range(3)], rest)
    # Each row's draws are its own: a process holding rows 3 and 17 of a global batch gets exactly those rows.
    batch = pipeline.stack_records(source[:32])
    whole = pipeline.TaskTransforms(tuple(tasks), train=True).on_rows(batch, rng(9), None, 32)
    rows = np.array([3, 17])
    part = pipeline.TaskTransforms(tuple(tasks), train=True).on_rows(
        {k: v[rows] for k, v in batch.items()}, rng(9), rows, 32)
    _assert_same(part, jax.tree.map(lambda v, r=rows: v[r], whole))


# ------------------------------------------------------------------------- a run, its pictures and transfer


def test_dense_tasks_train_draw_pictures_and_their_backbone_feeds_the_linear_probe(tfds_dir, tmp_path):
  """A denoising autoencoder and inpainting on one CifarNet through the trainer: both losses fall, every
  evaluation writes the picture grid, and the linear probe takes the checkpoint as it takes any other."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = fmnist_autoencoder.get_config('gaussian,quick')
  config.tasks.inpainting = ml_collections.ConfigDict({'mask': 'blocks', 'mask_size': 0.25, 'fill': 'zero'})
  config.data.data_dir = tfds_dir
  config.data.train_limit, config.data.eval_limit = 512, 32
  config.online_probe.enabled = False
  config.optim.lr = 3e-3
  config.update({'total_steps': 8, 'eval_every': 4, 'checkpoint_every': 8, 'log_every': 1, 'batch_size': 32,
                 'eval_batch_size': 32})
  workdir = tmp_path / 'dense'
  summary = loop.train_and_evaluate(config, str(workdir))
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  evals = [r for r in rows if r['split'] == 'test']
  # Held-out reconstructions improve between the two evaluations (deterministic: the same seed every run).
  assert summary['finished'] and [r['step'] for r in evals] == [4, 8]
  assert evals[1]['autoencoder/psnr'] > evals[0]['autoencoder/psnr']
  train = [r for r in rows if r['split'] == 'train']
  for key in ('autoencoder/loss', 'inpainting/loss'):
    assert np.mean([r[key] for r in train[-2:]]) < 0.9 * np.mean([r[key] for r in train[:2]]), key
  for name in ('reconstructions_test_step4.png', 'reconstructions_test_step8.png', 'reconstructions.png'):
    assert (workdir / name).stat().st_size > 1000, name
  # The same grids in TensorBoard, as PNG images at each evaluation's step.
  images = {(v.tag, e.step): v.image for e in _events(workdir / 'tensorboard') for v in e.summary.value
            if v.HasField('image')}
  assert set(images) == {('reconstructions/test', 4), ('reconstructions/test', 8)}
  assert all(i.encoded_image_string.startswith(b'\x89PNG') and i.height > 100 for i in images.values())
  # The linear probe takes the checkpoint as any other: the backbone is copied, the decoders left behind.
  probe = fmnist_linear.get_config('pool2')
  probe.data.data_dir = tfds_dir
  probe.data.train_limit, probe.data.eval_limit = 256, 32
  probe.init_from = str(workdir)
  exp = experiment.build_experiment(probe)
  assert exp.init_info['checkpoint'].endswith('checkpoints/8')
  saved = transfer.read_backbone(exp.init_info['checkpoint'])
  loaded = trees.flat_paths(exp.state.params['backbone'])
  assert set(loaded) <= set(saved) and loaded
  for path, value in loaded.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(saved[path]))
  # The benchmark's pictures take the run as an init: its filters get a panel, its reconstructions a row.
  bench = benchmark.Benchmark(fmnist_benchmark.get_config('quick'), str(tmp_path / 'bench'))
  bench.inits = {'dense': str(workdir), 'random': ''}
  drawn = bench.plots(bench.collect())
  assert drawn == {'filters': ['dense: cifarnet conv1 at step 8'], 'reconstructions': ['dense']}, drawn
  for name in ('filters.png', 'reconstructions.png'):
    assert (tmp_path / 'bench' / name).stat().st_size > 1000, name


def _events(folder):
  """Every event of every TensorBoard file in ``folder`` (TFRecord: length, its CRC, the record, its CRC)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  for path in sorted(folder.iterdir()):
    data, i = path.read_bytes(), 0
    while i < len(data):
      n = int.from_bytes(data[i:i + 8], 'little')
      event = event_pb2.Event()  # pylint: disable=no-member  # a generated protobuf class
      event.ParseFromString(data[i + 12:i + 12 + n])
      yield event
      i += 12 + n + 4


def test_reconstruction_pictures_show_what_the_network_saw(fmnist, tmp_path):
  from jaxssl.eval import reconstructions  # pylint: disable=import-outside-toplevel
  task = Inpainting(**STATS, fill='zero')
  batch = task.transform(raw(fmnist, n=4), rng(), train=False)
  shown = task.pictures({'output': np.full((4, 28, 28, 1), 0.5, np.float32)}, batch)
  assert list(shown) == ['input', 'target', 'output', 'pasted']
  np.testing.assert_allclose(shown['input'], batch['image'] / 255.0)
  np.testing.assert_allclose(shown['target'], fmnist[:4] / 255.0)
  hole = batch['mask'].astype(bool)
  assert (shown['pasted'][hole] == 0.5).all() and (shown['pasted'][~hole] == shown['input'][~hole]).all()
  path = reconstructions.picture_grid([('inpainting', shown)], str(tmp_path / 'grid.png'), 'title')
  assert (tmp_path / 'grid.png').stat().st_size > 1000 and path.endswith('grid.png')
  assert ae_lib.DEFAULT_NOISE_LEVEL['gaussian'] == 0.2
