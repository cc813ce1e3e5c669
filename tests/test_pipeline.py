"""grain pipelines and augmentations on real Fashion-MNIST images."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from jaxssl.data import augment, fashion_mnist, pipeline
from jaxssl.sharding import BatchLayout
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
      'num_workers': 0, 'read_threads': 3, 'prefetch_batches': 4, 'decoded_cache': False}   # on a CPU


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


@dataclasses.dataclass(frozen=True)
class Drawn:
  """Raw, plus a random draw per row: shows which generator each row's transform used."""
  name: str = 'raw'

  def transform(self, batch, rng, *, train):  # pylint: disable=unused-argument
    return {**batch, 'draw': rng.integers(0, 2**31, len(batch['weight']))}


def test_processes_share_every_global_batch_as_one_process_would_see_it(records):
  """3 processes x 2 devices: each reads its own rows of every global batch, and together they hold exactly the
  batch (records, transforms' random draws, padding) that 1 process x 6 devices holds, and 1 device."""
  whole = BatchLayout(60, 6, tuple(range(6)))
  parts = [BatchLayout(60, 6, (2 * p, 2 * p + 1)) for p in (1, 0, 2)]   # process 1 first: order must not matter
  one = pipeline.train_iterator(records, [Drawn()], global_batch=60, seed=0, layout=whole)
  many = [pipeline.train_iterator(records, [Drawn()], global_batch=60, seed=0, layout=l) for l in parts]
  for _ in range(12):  # two epochs
    expected = next(one)['raw']
    got = {l.chunks: next(it)['raw'] for l, it in zip(parts, many)}
    assert all(len(b['index']) == 20 for b in got.values())
    assert len(set(np.concatenate([b['index'] for b in got.values()]))) == 60  # disjoint
    for key, value in expected.items():
      np.testing.assert_array_equal(np.concatenate([got[c][key] for c in sorted(got)]), value)
  single = pipeline.train_iterator(records, [Drawn()], global_batch=60, seed=0, layout=BatchLayout(60, 1, (0,)))
  six = pipeline.train_iterator(records, [Drawn()], global_batch=60, seed=0, layout=whole)
  for _ in range(3):
    a, b = next(single)['raw'], next(six)['raw']
    for key, value in a.items():
      np.testing.assert_array_equal(value, b[key])

  # Eval: 88 records per batch on 6 devices -> batches of 90 rows, the 2 last rows padding; every record once.
  whole, parts = BatchLayout(90, 6, tuple(range(6))), [BatchLayout(90, 6, (2 * p, 2 * p + 1)) for p in range(3)]
  expected = [b['raw'] for b in pipeline.eval_batches(records[:301], [Drawn()], global_batch=88, layout=whole)]
  got = [[b['raw'] for b in pipeline.eval_batches(records[:301], [Drawn()], global_batch=88, layout=l)]
         for l in parts]
  assert len(expected) == 4 and all(len(g) == 4 for g in got)  # the same number of steps in every process
  for i, batch in enumerate(expected):
    for key, value in batch.items():
      np.testing.assert_array_equal(np.concatenate([g[i][key] for g in got]), value)
    assert (batch['weight'][88:] == 0).all()
  kept = np.concatenate([b['index'][b['weight'] > 0] for b in expected])
  np.testing.assert_array_equal(kept, np.arange(301))
  # The same records and draws in the same batches as on one device: the figures do not depend on the devices.
  single = [b['raw'] for b in pipeline.eval_batches(records[:301], [Drawn()], global_batch=88,
                                                     layout=BatchLayout(88, 1, (0,)))]
  for a, b in zip(single, expected):
    for key, value in a.items():
      np.testing.assert_array_equal(value[a['weight'] > 0], b[key][b['weight'] > 0])


def test_a_transform_that_draws_other_than_per_row_is_told_how():
  rng = pipeline.RowGenerator(np.random.default_rng(0), np.arange(4, 8), 8)
  assert rng.integers(0, 10, size=(4, 3)).shape == (4, 3)
  with pytest.raises(ValueError, match=r'draws per row: the size of each draw starts with its batch size \(4\)'):
    rng.random(size=8)
  with pytest.raises(ValueError, match=r'bounds shared by the rows: integers got bounds with a row axis'):
    rng.integers(0, np.arange(1, 5), size=4)
  assert rng.integers(0, np.array([3, 5]), size=(4, 2)).shape == (4, 2)  # bounds over a trailing axis
  with pytest.raises(AttributeError):
    rng.permutation(4)  # pylint: disable=no-member
  # The pipeline hands the same generator on one device: a transform that breaks the rule fails on its first run.

  @dataclasses.dataclass(frozen=True)
  class Scalar:
    name: str = 'raw'

    def transform(self, batch, rng, *, train):  # pylint: disable=unused-argument
      return {**batch, 'coin': rng.random()}

  with pytest.raises(ValueError, match='draws per row'):
    pipeline.TaskTransforms((Scalar(),), train=True).random_map({'weight': np.ones(3)}, np.random.default_rng(0))


def test_eval_padding_is_exact(records):
  batches = list(pipeline.eval_batches(records[:130], [Raw()], global_batch=64))
  assert len(batches) == 3
  weights = np.concatenate([b['raw']['weight'] for b in batches])
  assert weights.sum() == 130 and weights.shape == (192,)
  assert all(b['raw']['image'].shape == (64, 28, 28, 1) for b in batches)


def test_the_batch_readers_name_leaves_an_in_memory_source_out():
  """grain names a pipeline's stages by their str(): the batch reader's must not print its source (an in-memory
  one's repr formatted every image, ~3 s of CPU per iterator for 600 records)."""
  source = [{'image': np.full((28, 28, 1), 7, np.uint8), 'label': 1}] * 600
  name = str(pipeline._ReadAndTransform(source, None, None))  # pylint: disable=protected-access
  assert len(name) < 200 and 'array' not in name and 'image' not in name, name[:300]
