"""Relative patch location on real images (Fashion-MNIST, the DeepFashion sample): the label says where the
neighbour was cut, the gap and jitter bounds, colour dropping and projection, the loss by hand, learning, exact
resume of the pipeline, and a linear probe that starts from the pretext checkpoint."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import deepfashion_patch_location, fmnist_linear, fmnist_patch_location
from jaxssl.data import fashion_mnist, pipeline
from jaxssl.models import build_backbone
from jaxssl.sharding import BatchLayout
from jaxssl.tasks import build_tasks
from jaxssl.tasks.patch_location import (GREEN_MAGENTA, OFFSETS, PatchLocation, cut_pairs, pair_geometry,
                                         project_green_magenta)
from jaxssl.train import loop

STATS = {'mean': (fashion_mnist.MEAN,), 'std': (fashion_mnist.STD,)}
RGB_STATS = {'mean': (0.6, 0.55, 0.5), 'std': (0.3, 0.3, 0.3)}
FMNIST = {'patch_size': 7, 'gap': 3, 'jitter': 1, 'canvas_size': 28}   # configs/fmnist_patch_location.py's


@pytest.fixture(scope='module')
def fmnist(fmnist_source_dir):  # pylint: disable=unused-argument  # sets $JAXSSL_FASHION_MNIST_DIR
  images, _ = fashion_mnist.load_arrays('test')
  return np.pad(images[:512], ((0, 0), (2, 2), (2, 2), (0, 0)))   # data.pad_to=32, as the config


@pytest.fixture(scope='module')
def photos(deepfashion_sample):
  """24 real DeepFashion photographs, squashed to 128x128 RGB."""
  folder = pathlib.Path(deepfashion_sample) / 'img'
  out = []
  for path in sorted(folder.glob('*.jpg'))[:24]:
    with Image.open(path) as im:
      out.append(np.asarray(im.convert('RGB').resize((128, 128))))
  return np.stack(out)


def _crops(images, corners, p):
  """The source crop at every corner: [B, 2, p, p, C]."""
  return np.stack([np.stack([images[i, y:y + p, x:x + p] for y, x in corners[i]]) for i in range(len(images))])


def _where(image, patch):
  """Every top-left position where ``patch`` occurs in ``image``."""
  p = patch.shape[0]
  windows = np.lib.stride_tricks.sliding_window_view(image, (p, p), axis=(0, 1))   # [H-p+1, W-p+1, C, p, p]
  return np.argwhere((windows == patch.transpose(2, 0, 1)).all(axis=(2, 3, 4)))


# ------------------------------------------------------------------------------------------ the pairs


def test_the_label_is_where_the_neighbour_was_cut(fmnist):
  task = PatchLocation(**STATS, **FMNIST)
  out = task.pairs(fmnist[:128], np.random.default_rng(0))
  patches, label, corners = out['patches'], out['label'], out['corners']
  assert patches.shape == (128, 2, 7, 7, 1) and patches.dtype == np.uint8 and label.dtype == np.int32
  assert sorted(np.unique(label)) == list(range(8))
  np.testing.assert_array_equal(patches, _crops(fmnist[:128], corners, 7))   # grey: chroma leaves them as cut
  # Found again in the source image by their pixels alone: where both patches occur exactly once, the displacement
  # from the centre to the neighbour, in strides of patch + gap (the jitter rounds away), is the label's offset.
  checked = 0
  for i in range(128):
    found = [_where(fmnist[i], patches[i, k]) for k in range(2)]
    if len(found[0]) == 1 and len(found[1]) == 1:
      direction = np.rint((found[1][0] - found[0][0]) / 10)
      assert (OFFSETS[label[i]] == direction).all(), (i, label[i], found)
      checked += 1
  assert checked > 64   # blank patches (background) match everywhere; most pairs show the garment
  # transform = the same pairs without the corners; the dataset's labels are unused.
  batch = task.transform({'image': fmnist[:128], 'label': np.zeros(128), 'weight': np.ones(128, np.float32)},
                         np.random.default_rng(0), train=True)
  assert set(batch) == {'patches', 'label', 'weight'}
  np.testing.assert_array_equal(batch['patches'], patches)
  np.testing.assert_array_equal(batch['label'], label)


@pytest.mark.parametrize('shape,patch,gap,jitter', [((32, 32), 7, 3, 1), ((40, 30), 6, 4, 2), ((29, 29), 7, 3, 1),
                                                    ((256, 256), 68, 18, 4)])
def test_gap_and_jitter_bounds_hold_and_the_centre_does_not_tell_the_label(shape, patch, gap, jitter):
  geo = pair_geometry((*shape, 1), patch, gap, jitter)
  images = np.zeros((4000, *shape, 1), np.uint8)
  _, label, corners = cut_pairs(images, np.random.default_rng(1), geo)
  centre, neighbour = corners[:, 0], corners[:, 1]
  assert (corners >= 0).all() and (corners <= np.asarray(shape) - patch).all()     # inside the image
  shift = neighbour - centre - OFFSETS[label] * (patch + gap)
  assert shift.min() == -jitter and shift.max() == jitter                           # the whole jitter range, no more
  assert len(np.unique(shift, axis=0)) == (2 * jitter + 1) ** 2
  apart = np.abs(neighbour - centre) - patch                                        # pixels between, per axis
  moved = OFFSETS[label] != 0
  assert (apart[moved] >= gap - jitter).all() and (apart[moved] <= gap + jitter).all()
  assert (apart[moved] == gap - jitter).any() and (apart[moved] == gap + jitter).any()
  # The centre patch ranges over the same positions whatever the label: its place cannot give the answer away.
  spans = {(tuple(centre[label == k].min(0)), tuple(centre[label == k].max(0))) for k in range(8)}
  assert len(spans) == 1
  np.testing.assert_array_equal(np.unique(label, return_counts=True)[0], np.arange(8))


def test_options_are_checked():
  with pytest.raises(ValueError, match='spans 31 px'):
    PatchLocation(**STATS, patch_size=7, gap=4, jitter=1).backbone_input_shape((28, 28, 1))
  assert PatchLocation(**STATS, **FMNIST).backbone_input_shape((32, 32, 1)) == (28, 28, 1)
  assert PatchLocation(**STATS, patch_size=68, gap=18, jitter=4).backbone_input_shape((256, 256, 3)) == (68, 68, 3)
  with pytest.raises(ValueError, match='exceeds gap'):
    PatchLocation(**STATS, gap=1, jitter=2)
  with pytest.raises(ValueError, match='canvas_size=5'):
    PatchLocation(**STATS, patch_size=7, canvas_size=5)
  with pytest.raises(ValueError, match="unknown chroma 'gray'"):
    PatchLocation(**STATS, chroma='gray')
  with pytest.raises(ValueError, match='hidden_sizes'):
    PatchLocation(**STATS, hidden_sizes=(0,))


# ------------------------------------------------------------------------------------- chromatic aberration


def test_colour_dropping_keeps_one_channel_per_patch_and_only_on_colour_images(photos, fmnist):
  geo = {'patch_size': 24, 'gap': 12, 'jitter': 3}
  plain = PatchLocation(**RGB_STATS, **geo, chroma='none').pairs(photos, np.random.default_rng(2))
  dropped = PatchLocation(**RGB_STATS, **geo, chroma='drop').pairs(photos, np.random.default_rng(2))
  # The same pairs (the colour draws come after the geometry's), as cut when nothing is dropped.
  np.testing.assert_array_equal(dropped['corners'], plain['corners'])
  np.testing.assert_array_equal(dropped['label'], plain['label'])
  crops = _crops(photos, plain['corners'], 24)
  np.testing.assert_array_equal(plain['patches'], crops)
  x, src = dropped['patches'].astype(int), crops.astype(int)
  fill = np.round(np.asarray(RGB_STATS['mean']) * 255).astype(int)
  near_mean = (np.abs(x - fill) <= 6).all(axis=(2, 3))                 # [B, 2, 3]; noise: 1/100 of a std
  same = (x == src).all(axis=(2, 3))                                   # channels left as they were
  clear = (~near_mean).sum(-1) == 1    # else the kept channel was itself flat at the mean fill: cannot tell
  assert clear.mean() > 0.9
  # Every patch keeps exactly one channel as it was and fills the other two with its mean.
  assert (near_mean.sum(-1)[clear] == 2).all() and (same & ~near_mean)[clear].sum(-1).tolist() == [1] * clear.sum()
  kept = np.argmax(~near_mean, axis=-1)
  assert set(kept[clear].tolist()) == {0, 1, 2}                        # drawn per patch
  assert (kept[:, 0] != kept[:, 1])[clear.all(-1)].any()               # the two patches of a pair draw apart
  # A grey image has no colour fringes: 'drop' leaves Fashion-MNIST as cut.
  grey = PatchLocation(**STATS, **FMNIST, chroma='drop').pairs(fmnist[:32], np.random.default_rng(3))
  np.testing.assert_array_equal(grey['patches'], _crops(fmnist[:32], grey['corners'], 7))


def test_projection_removes_green_magenta(photos):
  geo = {'patch_size': 24, 'gap': 12, 'jitter': 3}
  out = PatchLocation(**RGB_STATS, **geo, chroma='project').pairs(photos, np.random.default_rng(4))
  src = _crops(photos, out['corners'], 24).astype(np.float64)
  x = out['patches'].astype(np.float64)
  assert np.abs(src @ GREEN_MAGENTA).mean() > 3            # the photos have some green-magenta to remove
  exact = src - (src @ GREEN_MAGENTA)[..., None] * GREEN_MAGENTA
  inside = ((exact >= 0) & (exact <= 255)).all(-1)
  assert np.abs(x @ GREEN_MAGENTA)[inside].max() <= 1.5   # only rounding left where no clipping was needed
  # The rest of the colour stays: each pixel is the exact projection, rounded.
  np.testing.assert_allclose(x[inside], exact[inside], atol=0.5 + 1e-4)
  grey = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1), 3, axis=-1)
  np.testing.assert_array_equal(project_green_magenta(grey), grey)


# ---------------------------------------------------------------------------------------- loss and model


def test_loss_by_hand():
  task = PatchLocation(**STATS)
  logits = np.zeros((3, 8), np.float32)
  logits[1, 1] = np.log(7.0)   # p(label 1) = 7 / (7 + 7) = 1/2
  logits[2, 2] = 50.0          # a padding row: weight 0, counts nowhere
  batch = {'label': np.array([3, 1, 5], np.int32), 'weight': np.array([1.0, 1.0, 0.0], np.float32)}
  loss, m = task.loss(jnp.asarray(logits), batch)
  # Row 0: uniform, -log(1/8) = 3 log 2, and argmax 0 != 3; row 1: -log(1/2), right. Mean: 2 log 2.
  np.testing.assert_allclose(float(loss), 2 * np.log(2.0), rtol=1e-6)
  assert float(m['acc']) == 0.5
  pairs = {k: tuple(float(v) for v in m[f'acc_{k}']) for k in range(8)}
  assert pairs[3] == (0.0, 1.0) and pairs[1] == (1.0, 1.0) and pairs[5] == (0.0, 0.0)
  assert all(pairs[k] == (0.0, 0.0) for k in (0, 2, 4, 6, 7))


def _model(task, image_shape):
  def build():
    backbone = build_backbone('cifarnet', input_shape=task.backbone_input_shape(image_shape), rngs=nnx.Rngs(0))
    return nnx.Dict({'backbone': backbone, 'head': task.make_head(backbone, image_shape, nnx.Rngs(1))})
  return nnx.jit(build)()


def test_a_few_steps_lower_the_loss_and_padding_rows_do_not_count(fmnist):
  task = PatchLocation(**STATS, **FMNIST, hidden_sizes=(64,))
  batch = task.transform({'image': fmnist[:16], 'weight': np.ones(16, np.float32)}, np.random.default_rng(5),
                         train=True)
  graphdef, params, rest = nnx.split(_model(task, (32, 32, 1)), nnx.Param, ...)

  def loss_fn(params, batch):
    model = nnx.merge(graphdef, params, rest, copy=True)
    return task.loss(task.forward(model['backbone'], model['head'], batch, train=True, rng=None), batch)

  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss0, _), _ = grad_fn(params, batch)
  np.testing.assert_allclose(float(loss0), np.log(8.0), rtol=1e-6)   # the zero-initialized classifier
  p = params
  for _ in range(5):
    _, g = grad_fn(p, batch)
    p = jax.tree.map(lambda a, b: a - 0.02 * b, p, g)
  (loss5, _), _ = grad_fn(p, batch)
  assert float(loss5) < float(loss0) - 0.05
  weight = batch['weight'].copy()
  weight[8:] = 0.0
  padded = {k: (weight if k == 'weight' else np.concatenate([v[:8], v[:8]])) for k, v in batch.items()}
  np.testing.assert_allclose(float(grad_fn(p, padded)[0][0]), float(grad_fn(p, {**batch, 'weight': weight})[0][0]),
                             rtol=1e-5)


# ------------------------------------------------------------------------------------------- pipeline


def _same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_pipeline_resumes_exactly_and_rows_split_over_processes_as_one(fmnist, photos):
  source = [{'image': image} for image in fmnist[:96]]
  tasks = [PatchLocation(**STATS, **FMNIST)]
  it = pipeline.train_iterator(source, tasks, global_batch=32, seed=3)
  first = [next(it) for _ in range(2)]
  saved = it.get_state()
  rest = [next(it) for _ in range(4)]                                  # into the next epoch
  resumed = pipeline.train_iterator(source, tasks, global_batch=32, seed=3)
  resumed.set_state(saved)
  _same([next(resumed) for _ in range(4)], rest)
  assert not np.array_equal(first[0]['patch_location']['patches'], rest[0]['patch_location']['patches'])
  # Colour dropping draws per row too: two processes' halves of a batch are the batch one process makes.
  colour = [{'image': image} for image in photos]
  tasks = [PatchLocation(**RGB_STATS, patch_size=24, gap=12, jitter=3, chroma='drop')]
  whole = next(pipeline.train_iterator(colour, tasks, global_batch=12, seed=0,
                                       layout=BatchLayout(12, 2, (0, 1))))['patch_location']
  halves = [next(pipeline.train_iterator(colour, tasks, global_batch=12, seed=0,
                                         layout=BatchLayout(12, 2, (d,))))['patch_location'] for d in (0, 1)]
  for key, value in whole.items():
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), value)


# ---------------------------------------------------------------------------------- configs and transfer


def test_deepfashion_config_fits_alexnet_and_its_images():
  for arg in ('sample', 'sample,quick'):
    config = deepfashion_patch_location.get_config(arg)
    task = build_tasks(config.tasks, type('Info', (), {'num_classes': 0, 'mean': (0.5,) * 3, 'std': (0.2,) * 3,
                                                       'attribute_names': (), 'attribute_frequency': ()})())[0][0]
    shape = task.backbone_input_shape((config.data.image_size, config.data.image_size, 3))
    assert shape == (68, 68, 3) and task.chroma == 'drop'


def test_pretext_run_then_a_linear_probe_from_its_checkpoint(tfds_dir, tmp_path):
  config = fmnist_patch_location.get_config('quick')
  config.data.data_dir = tfds_dir
  config.data.train_limit, config.data.eval_limit = 256, 100
  config.update({'total_steps': 4, 'eval_every': 0, 'checkpoint_every': 4, 'log_every': 2, 'batch_size': 16,
                 'eval_batch_size': 100})
  config.tasks.patch_location.hidden_sizes = (64,)
  config.online_probe.enabled = False   # its k-NN over the training split would double the test's time
  summary = loop.train_and_evaluate(config, str(tmp_path / 'pretext'))
  assert summary['finished'] and 0.0 <= summary['eval']['patch_location/acc'] <= 1.0
  assert {f'patch_location/acc_{k}' for k in range(8)} <= set(summary['eval'])
  probe = fmnist_linear.get_config('pool2')
  probe.data.data_dir = tfds_dir
  probe.data.train_limit, probe.data.eval_limit = 256, 100
  probe.update({'total_steps': 2, 'eval_every': 0, 'checkpoint_every': 2, 'log_every': 1, 'batch_size': 32,
                'eval_batch_size': 100, 'init_from': str(tmp_path / 'pretext')})
  summary = loop.train_and_evaluate(probe, str(tmp_path / 'probe'))
  assert summary['finished'] and np.isfinite(summary['eval']['classify/loss'])
  with open(os.path.join(tmp_path, 'probe', 'init_from.json'), encoding='utf-8') as f:
    assert json.load(f)['step'] == 4
