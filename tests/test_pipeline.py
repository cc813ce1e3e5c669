"""grain pipelines and augmentations on real Fashion-MNIST images."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from jaxssl.data import augment, fashion_mnist, pipeline
from jaxssl.tasks.classification import Classification


@pytest.fixture(scope='module')
def records(fmnist_source_dir):
  images, labels = fashion_mnist.load_arrays('test', fmnist_source_dir)
  return [{'image': images[i], 'label': int(labels[i]), 'index': i} for i in range(600)]


@dataclasses.dataclass(frozen=True)
class Raw:
  """A task that passes the raw batch through, to look at what the pipeline feeds tasks."""
  name: str = 'raw'

  def transform(self, batch, rng, *, train):  # pylint: disable=unused-argument
    return batch


def _take(it, n):
  return [next(it)['raw'] for _ in range(n)]


def test_random_crop_is_a_shift_of_the_padded_image(records):
  images = np.stack([r['image'] for r in records[:32]])
  out = augment.random_crop(images, np.random.default_rng(0), padding=3)
  padded = np.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)))
  shifts = []
  for i in range(len(images)):
    found = [(dy, dx) for dy in range(7) for dx in range(7)
             if np.array_equal(out[i], padded[i, dy:dy + 28, dx:dx + 28])]
    assert found, f'crop {i} is not a window of the padded image'
    shifts.append(found[0])
  assert len(set(shifts)) > 5  # offsets really vary
  np.testing.assert_array_equal(augment.random_crop(images, np.random.default_rng(0), 0), images)


def test_random_flip_mirrors_about_half(records):
  images = np.stack([r['image'] for r in records[:200]])
  out = augment.random_flip(images, np.random.default_rng(1))
  flipped = np.array([np.array_equal(o, im[:, ::-1]) and not np.array_equal(o, im) for o, im in zip(out, images)])
  same = np.array([np.array_equal(o, im) for o, im in zip(out, images)])
  assert np.all(flipped | same)
  assert 60 < flipped.sum() < 140


def test_every_epoch_covers_each_record_once_in_a_new_order(records):
  it = pipeline.train_iterator(records, [Raw()], global_batch=100, seed=3)
  epochs = [np.concatenate([b['index'] for b in _take(it, 6)]) for _ in range(2)]
  for order in epochs:
    assert sorted(order) == list(range(600))
  assert not np.array_equal(epochs[0], epochs[1])


def test_same_seed_same_batches_other_seed_other_batches(records):
  task = Classification(num_classes=10, mean=0.286, std=0.353, crop_padding=2, flip=True)
  def first(seed):
    return next(pipeline.train_iterator(records, [task], global_batch=50, seed=seed))['classify']
  a, b, c = first(0), first(0), first(1)
  np.testing.assert_array_equal(a['image'], b['image'])
  np.testing.assert_array_equal(a['label'], b['label'])
  assert not np.array_equal(a['image'], c['image'])


def test_read_threads_and_prefetch_do_not_change_the_batches(records):
  """How many threads prepare batches, and how far ahead, is speed only: the same batches in the same order."""
  task = Classification(num_classes=10, mean=0.286, std=0.353, crop_padding=2, flip=True)
  def batches(**options):
    it = pipeline.train_iterator(records, [task], global_batch=64, seed=5, **options)
    return [next(it)['classify'] for _ in range(12)]  # crosses an epoch boundary
  for a, b in zip(batches(), batches(read_threads=4, prefetch_batches=1)):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert pipeline.iterator_options(ml_collections.ConfigDict({'read_threads': 3})) == {
      'num_workers': 0, 'read_threads': 3, 'prefetch_batches': 4}


@pytest.mark.parametrize('num_workers', [0, 2])
def test_restored_iterator_continues_identically(records, num_workers):
  task = Classification(num_classes=10, mean=0.286, std=0.353, crop_padding=2, flip=True)
  kw = dict(global_batch=64, seed=7, num_workers=num_workers)
  it = pipeline.train_iterator(records, [task], **kw)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it)['classify']['image'] for _ in range(12)]  # crosses an epoch boundary
  resumed = pipeline.train_iterator(records, [task], **kw)
  resumed.set_state(state)
  got = [next(resumed)['classify']['image'] for _ in range(12)]
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(e, g)
  single = pipeline.train_iterator(records, [task], global_batch=64, seed=7)
  for _ in range(3):
    next(single)
  np.testing.assert_array_equal(next(single)['classify']['image'], expected[0])  # workers == one process
  for i in (it, resumed):
    if hasattr(i, 'close'):
      i.close()


def test_processes_get_disjoint_shards_and_equal_eval_batches(records, monkeypatch):
  seen_train, seen_eval, counts = [], [], []
  for p in range(3):
    monkeypatch.setattr(jax, 'process_index', lambda p=p: p)
    monkeypatch.setattr(jax, 'process_count', lambda: 3)
    it = pipeline.train_iterator(records, [Raw()], global_batch=60, seed=0)
    seen_train.append(np.concatenate([b['index'] for b in _take(it, 10)]))  # one epoch of 200 each
    batches = [b['raw'] for b in pipeline.eval_batches(records[:301], [Raw()], global_batch=90)]
    counts.append(len(batches))
    seen_eval.append(np.concatenate([b['index'][b['weight'] > 0] for b in batches]))
  assert sorted(np.concatenate(seen_train)) == list(range(600))
  assert sorted(np.concatenate(seen_eval)) == list(range(301))
  assert len(set(counts)) == 1  # every process runs the same number of eval steps


def test_eval_padding_is_exact(records):
  batches = list(pipeline.eval_batches(records[:130], [Raw()], global_batch=64))
  assert len(batches) == 3
  weights = np.concatenate([b['raw']['weight'] for b in batches])
  assert weights.sum() == 130 and weights.shape == (192,)
  assert all(b['raw']['image'].shape == (64, 28, 28, 1) for b in batches)
