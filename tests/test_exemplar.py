"""Exemplar CNN on real images: every transformation against an independent reference, labels that name the
exemplar a view was made from, the fixed table of K views, per-row draws, the exemplars chosen from the seed and
saved, the loss alone on worked values, a few steps that lower it, and an exact pipeline resume."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import deepfashion_exemplar, fmnist_exemplar
from jaxssl.config_check import check_config
from jaxssl.data import datasets, fashion_mnist, pipeline
from jaxssl.models import build_backbone
from jaxssl.tasks import build_tasks
from jaxssl.tasks import exemplar as ex
from jaxssl.train import loop

STATS = {'mean': (fashion_mnist.MEAN,), 'std': (fashion_mnist.STD,)}
IDENTITY = {'ty': 0.0, 'tx': 0.0, 'scale': 1.0, 'angle': 0.0, 'flip': 0.0, 'power': 1.0, 'multiply': 1.0, 'add': 0.0,
            'hue': 0.0, 'sat_power': 1.0, 'sat_multiply': 1.0, 'sat_add': 0.0}


@pytest.fixture(scope='module')
def fmnist(fmnist_source_dir):
  return fashion_mnist.load_arrays('test', fmnist_source_dir)


@pytest.fixture(scope='module')
def photos(deepfashion_sample):
  """Eight real DeepFashion photographs, 64 x 64 RGB."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  files = sorted((pathlib.Path(deepfashion_sample) / 'img').glob('*.jpg'))[:8]
  return np.stack([np.asarray(Image.open(f).convert('RGB').resize((64, 64))) for f in files])


def params(n, **values):
  return {k: np.full(n, values.get(k, v), np.float32) for k, v in IDENTITY.items()}


def records(images, labels, n):
  return [{'image': images[i], 'label': int(labels[i]), 'index': i} for i in range(n)]


def task(**options):
  return ex.Exemplar(**STATS, **{'num_exemplars': 50, **options})


# ------------------------------------------------------------------------------------ the transformations


def test_each_geometric_transform_matches_an_independent_reference(fmnist):
  x = fmnist[0][:32]
  n = len(x)
  np.testing.assert_array_equal(ex.apply_transforms(x, params(n)), x)
  np.testing.assert_array_equal(ex.apply_transforms(x, params(n, angle=90.0)), np.rot90(x, 1, axes=(1, 2)))
  np.testing.assert_array_equal(ex.apply_transforms(x, params(n, angle=-90.0)), np.rot90(x, -1, axes=(1, 2)))
  np.testing.assert_array_equal(ex.apply_transforms(x, params(n, flip=1.0)), x[:, :, ::-1])
  shifted = np.zeros_like(x)
  shifted[:, 3:, :-2] = x[:, :-3, 2:]                     # 3 px down, 2 px left, zeros come in
  np.testing.assert_array_equal(ex.apply_transforms(x, params(n, ty=3 / 28, tx=-2 / 28)), shifted)
  edge = ex.apply_transforms(x, params(n, ty=3 / 28), fill='edge')
  np.testing.assert_array_equal(edge[:, :3], np.repeat(x[:, :1], 3, axis=1))
  reflect = ex.apply_transforms(x, params(n, ty=3 / 28), fill='reflect')
  np.testing.assert_array_equal(reflect[:, :3], x[:, 3:0:-1])   # rows -3, -2, -1 mirror rows 3, 2, 1
  # Shrinking by 2 about the centre (13.5): output pixel y reads input 2y - 13.5, the mean of rows 2y-14 and 2y-13.
  half = ex.apply_transforms(x, params(n, scale=0.5)).astype(np.float64)
  blocks = x.astype(np.float64)[:, :, :, 0].reshape(n, 14, 2, 14, 2).mean(axis=(2, 4))   # block (i, j) = rows 2i..
  np.testing.assert_allclose(half[:, 7:21, 7:21, 0], blocks[:, 0:14, 0:14], atol=0.51)
  assert (half[:, :7] == 0).all() and (half[:, 21:] == 0).all()   # the rest of the frame is zero fill


def test_contrast_is_the_papers_power_multiply_add_curve(fmnist):
  x = fmnist[0][:16]
  out = ex.apply_transforms(x, params(16, power=2.0, multiply=1.2, add=-0.05), enabled=('contrast',))
  expected = np.rint(255 * np.clip(1.2 * (x / 255.0) ** 2 - 0.05, 0, 1))
  np.testing.assert_array_equal(out, expected)


def test_colour_shifts_hue_and_keeps_an_identity_exact(photos):
  n = len(photos)
  np.testing.assert_array_equal(ex.apply_transforms(photos, params(n)), photos)   # HSV there and back: exact
  # A third of the hue circle moves every colour two sextants on: the channels rotate (r, g, b) -> (b, r, g).
  turned = ex.apply_transforms(photos, params(n, hue=1 / 3), enabled=('colour',))
  assert np.abs(turned.astype(int) - np.roll(photos, 1, axis=-1)).max() <= 1
  hsv = ex.rgb_to_hsv(photos / 255.0)
  import colorsys  # pylint: disable=import-outside-toplevel
  for y, x in ((3, 5), (30, 40), (60, 2)):
    np.testing.assert_allclose(hsv[0, y, x], colorsys.rgb_to_hsv(*(photos[0, y, x] / 255.0)), atol=1e-9)
  # Value (contrast) on colour images: a darker power darkens, the hue is kept.
  dark = ex.apply_transforms(photos, params(n, power=2.0), enabled=('contrast',))
  assert dark.mean() < photos.mean() - 10
  # On grey images 'colour' changes nothing.
  grey = photos[..., :1]
  np.testing.assert_array_equal(ex.apply_transforms(grey, params(n, hue=0.3, sat_add=0.2), enabled=('colour',)),
                                grey)


# ------------------------------------------------------------------------------- views, labels, draws


def test_labels_name_the_exemplar_each_view_was_made_from(fmnist):
  images, labels = fmnist
  t = task()
  t.set_exemplars(images[:50])
  batch = {'image': images[100:164], 'label': labels[100:164], 'weight': np.ones(64, np.float32)}
  out = t.transform(batch, np.random.default_rng(0), train=True)
  assert set(out) == {'image', 'label', 'weight'} and out['image'].shape == (64, 28, 28, 1)
  assert out['label'].dtype == np.int32 and 0 <= out['label'].min() and out['label'].max() < 50
  assert len(np.unique(out['label'])) > 30                       # ids drawn per row, not the records' order
  ids, views, p = t.views(np.random.default_rng(0), 64, train=True)
  np.testing.assert_array_equal(ids, out['label'])
  np.testing.assert_array_equal(views, out['image'])
  np.testing.assert_array_equal(ex.apply_transforms(images[:50][ids], p), views)   # view = T_p(exemplar[label])
  assert (views != images[:50][ids]).any(axis=(1, 2, 3)).mean() > 0.95               # and the transforms act
  # With no transformations a view is exactly its exemplar; the same draws give the same ids.
  plain = task(transforms=())
  plain.set_exemplars(images[:50])
  out0 = plain.transform(batch, np.random.default_rng(0), train=True)
  np.testing.assert_array_equal(out0['label'], out['label'])
  np.testing.assert_array_equal(out0['image'], images[:50][out0['label']])
  # Padding rows keep weight 0.
  batch['weight'][60:] = 0
  assert t.transform(batch, np.random.default_rng(0), train=False)['weight'].sum() == 60


def test_k_fixed_transformations_per_exemplar(fmnist):
  images, _ = fmnist
  t = task(num_exemplars=10, transforms_per_exemplar=3, exemplar_seed=4)
  t.set_exemplars(images[:10])
  table = t.table
  assert set(table) == set(ex.PARAMS) and table['angle'].shape == (10, 3)
  fixed = {(i, k): ex.apply_transforms(images[i:i + 1], {p: v[i:i + 1, k] for p, v in table.items()})[0]
           for i in range(10) for k in range(3)}
  ids, views, _ = t.views(np.random.default_rng(1), 200, train=True)
  for i, view in zip(ids, views):
    assert any(np.array_equal(view, fixed[int(i), k]) for k in range(3))   # one of its K views
  seen = {next(k for k in range(3) if np.array_equal(v, fixed[int(i), k])) for i, v in zip(ids, views)}
  assert seen == {0, 1, 2}
  # Evaluation draws new transformations, not the table's.
  ids, views, _ = t.views(np.random.default_rng(1), 50, train=False)
  assert not all(any(np.array_equal(v, fixed[int(i), k]) for k in range(3)) for i, v in zip(ids, views))
  # The table comes from the seed alone.
  again = task(num_exemplars=10, transforms_per_exemplar=3, exemplar_seed=4)
  again.set_exemplars(images[:10])
  np.testing.assert_array_equal(again.table['tx'], table['tx'])


def test_draws_are_per_row_whatever_process_holds_the_row(fmnist):
  images, labels = fmnist
  t = task()
  t.set_exemplars(images[:50])
  batch = {'image': images[:32], 'label': labels[:32], 'weight': np.ones(32, np.float32)}
  whole = t.transform(batch, pipeline.RowGenerator(np.random.default_rng(5), np.arange(32), 32), train=True)
  rows = np.arange(8, 24)
  part = {k: v[rows] for k, v in batch.items()}
  mine = t.transform(part, pipeline.RowGenerator(np.random.default_rng(5), rows, 32), train=True)
  for key in ('image', 'label', 'weight'):
    np.testing.assert_array_equal(mine[key], whole[key][rows])


# ------------------------------------------------------------------- exemplars chosen, saved and reused


def test_exemplars_come_from_the_seed_and_are_saved(fmnist, tmp_path):
  images, labels = fmnist
  source = records(images, labels, 600)
  idx = ex.choose_exemplars(600, 40, seed=3)
  assert len(np.unique(idx)) == 40 and (np.diff(idx) > 0).all() and idx.max() < 600
  np.testing.assert_array_equal(idx, ex.choose_exemplars(600, 40, seed=3))
  assert not np.array_equal(idx, ex.choose_exemplars(600, 40, seed=4))
  t = ex.Exemplar(**STATS, num_exemplars=40, exemplar_seed=3, train_source=source)
  assert t.train_source is None                           # held as images: the source does not travel to workers
  np.testing.assert_array_equal(t.exemplars, images[idx])
  arts = t.artifacts()
  np.testing.assert_array_equal(arts['exemplar_indices.npy'], idx)
  np.testing.assert_array_equal(arts['exemplars.npy'], images[idx])
  np.save(tmp_path / 'exemplar_indices.npy', arts['exemplar_indices.npy'])
  reused = ex.Exemplar(**STATS, num_exemplars=40, indices_path=str(tmp_path / 'exemplar_indices.npy'),
                       exemplar_seed=99, train_source=source)
  np.testing.assert_array_equal(reused.exemplars, t.exemplars)
  with pytest.raises(ValueError, match='only 600 records'):
    ex.Exemplar(**STATS, num_exemplars=601, train_source=source)
  with pytest.raises(ValueError, match='must hold 41 distinct'):
    ex.Exemplar(**STATS, num_exemplars=41, indices_path=str(tmp_path / 'exemplar_indices.npy'), train_source=source)
  with pytest.raises(ValueError, match='has no exemplars'):
    ex.Exemplar(**STATS).transform({'image': images[:2], 'weight': np.ones(2, np.float32)},
                                   np.random.default_rng(0), train=True)
  # build_tasks hands the task the run's training split (a config alone cannot know its images).
  info = datasets.get_dataset('fashion_mnist')
  tasks, _ = build_tasks(fmnist_exemplar.get_config('quick').tasks, info, train_source=source)
  np.testing.assert_array_equal(tasks[0].exemplars, images[ex.choose_exemplars(600, 100, 0)])


@pytest.mark.parametrize('options,message', [
    ({'transforms': ('translate', 'shear')}, "unknown transform.*shear"),
    ({'fill': 'wrap'}, "unknown fill 'wrap'"),
    ({'scale': (1.4, 0.7)}, 'scale=.* must be a range'),
    ({'num_exemplars': 1}, 'num_exemplars=1 must be >= 2'),
    ({'rotate': 270.0}, 'out of range'),
])
def test_bad_options_are_one_line(options, message):
  with pytest.raises(ValueError, match=message):
    task(**options)


def test_configs_check_and_name_their_arguments():
  for arg in ('', 'quick', 'resnet18_cifar', 'resnet18_cifar,quick'):
    config = fmnist_exemplar.get_config(arg)
    check_config(config)
    assert config.online_probe.enabled and config.tasks.exemplar.num_exemplars == (100 if 'quick' in arg else 8000)
  assert fmnist_exemplar.get_config('resnet18_cifar').online_probe.feature == 'pool'
  for arg in ('sample,quick', 'sample', 'benchmark', 'csv,quick'):
    config = deepfashion_exemplar.get_config(arg)
    check_config(config)
    assert config.online_probe.enabled == arg.startswith('benchmark')   # the sample has no categories
    assert config.tasks.exemplar.fill == 'reflect' and 'colour' in config.tasks.exemplar.transforms


# --------------------------------------------------------------------------------------------- loss


def test_loss_on_worked_values():
  logits = jnp.array([[0.0, np.log(3.0), 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
  batch = {'label': jnp.array([1, 1, 0]), 'weight': jnp.array([1.0, 1.0, 0.0])}
  loss, m = ex.exemplar_loss(logits, batch)
  # Row 0: p(1) = 3/5 -> -log 0.6; row 1: p(1) = 1/(e^2 + 2) -> log(e^2 + 2); row 2 has weight 0.
  expected = (-np.log(0.6) + np.log(np.exp(2.0) + 2.0)) / 2
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  assert float(m['acc']) == 0.5 and float(m['top5']) == 1.0 and float(m['loss']) == float(loss)


def test_a_few_steps_lower_the_loss(fmnist):
  images, labels = fmnist
  t = task(num_exemplars=16)
  t.set_exemplars(images[:16])
  batch = t.transform({'image': images[:32], 'label': labels[:32], 'weight': np.ones(32, np.float32)},
                      np.random.default_rng(0), train=True)

  def build():
    backbone = build_backbone('cifarnet', input_shape=(28, 28, 1), rngs=nnx.Rngs(0))
    return nnx.Dict({'backbone': backbone, 'head': t.make_head(backbone, (28, 28, 1), nnx.Rngs(1))})
  graphdef, p, rest = nnx.split(nnx.jit(build)(), nnx.Param, ...)

  def loss_fn(p):
    model = nnx.merge(graphdef, p, rest, copy=True)
    return t.loss(t.forward(model['backbone'], model['head'], batch, train=True, rng=None), batch)

  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss0, _), _ = grad_fn(p)
  np.testing.assert_allclose(float(loss0), np.log(16), rtol=1e-5)   # the zero-initialized head: uniform
  for _ in range(5):
    _, g = grad_fn(p)
    p = jax.tree.map(lambda a, b: a - 0.05 * b, p, g)
  (loss5, m), _ = grad_fn(p)
  assert float(loss5) < float(loss0) - 0.1 and float(m['acc']) > 1 / 16


# ------------------------------------------------------------------------------ pipeline and trainer


def _take(it, n):
  return [next(it)['exemplar'] for _ in range(n)]


def test_pipeline_is_deterministic_and_resumes_exactly(fmnist):
  images, labels = fmnist
  source = records(images, labels, 96)
  t = ex.Exemplar(**STATS, num_exemplars=20, train_source=source)
  first = _take(pipeline.train_iterator(source, [t], global_batch=32, seed=7), 5)
  it = pipeline.train_iterator(source, [t], global_batch=32, seed=7)
  _take(it, 2)
  saved = it.get_state()
  rest = _take(it, 3)
  resumed = pipeline.train_iterator(source, [t], global_batch=32, seed=7)
  resumed.set_state(saved)
  for a, b, c in zip(_take(resumed, 3), rest, first[2:]):
    for key in ('image', 'label', 'weight'):
      np.testing.assert_array_equal(a[key], b[key])
      np.testing.assert_array_equal(a[key], c[key])
  assert not np.array_equal(first[0]['label'], first[1]['label'])


def test_trains_end_to_end_and_saves_its_exemplars(tfds_dir, tmp_path):
  config = fmnist_exemplar.get_config('quick')
  config.data.data_dir = tfds_dir
  config.data.train_limit, config.data.eval_limit = 512, 100
  config.online_probe.enabled = False   # tests/test_online_probe.py runs the probe
  config.update({'total_steps': 3, 'eval_every': 0, 'checkpoint_every': 3, 'log_every': 1, 'batch_size': 16,
                 'eval_batch_size': 100})
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary['finished'] and 0.0 <= summary['eval']['exemplar/acc'] <= 1.0
  assert np.isfinite(summary['eval']['exemplar/loss'])
  idx = np.load(tmp_path / 'artifacts' / 'exemplar' / 'exemplar_indices.npy')
  np.testing.assert_array_equal(idx, ex.choose_exemplars(512, 100, 0))
  saved = np.load(tmp_path / 'artifacts' / 'exemplar' / 'exemplars.npy')
  assert saved.shape == (100, 28, 28, 1) and saved.dtype == np.uint8
