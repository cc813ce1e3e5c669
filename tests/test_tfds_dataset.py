"""``tfds:NAME`` datasets (jaxssl/data/tfds_any.py): a tfds builder of our own, prepared in ArrayRecord by a
separate process, is read here by name from its files alone (its builder code is never imported into this
process): records, labels, class names, splits and slices, resizing, statistics, the one-line errors, and a short
training run.

Run this file as a script (``python tests/test_tfds_dataset.py DATA_DIR``) to prepare the datasets by hand.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from conftest import REPO, small_config
from jaxssl.config_check import check_config
from jaxssl.data import datasets, tfds_any

NAME = 'jaxssl_test_shapes'
CLASSES = ('disc', 'bar')
SHADES = ('dark', 'light')
SPLITS = {'train': 64, 'test': 32}


def draw(split: str, i: int, config: str) -> tuple[np.ndarray, int, int]:
  """Record ``i`` of ``split``: (image uint8 HxWxC, label, shade). A bright disc (label 0) or bar (label 1) on a
  dark or light noisy square; 'rgb' images vary in size (record 0 is 32x32, record 1 64x64) with pure red margins
  beside the centre square on the longer side, so that a centre crop removes every red pixel; 'gray' images are
  32x32x1."""
  rng = np.random.default_rng([list(SPLITS).index(split), i])
  label, shade = i % 2, (i // 2) % 2
  h, w = (32, 32) if config == 'gray' or i == 0 else (64, 64) if i == 1 else tuple(rng.integers(24, 57, 2))
  side = min(h, w)
  square = (40 + 120 * shade + rng.integers(0, 30, (side, side))).astype(np.uint8)
  yy, xx = np.mgrid[:side, :side] / side
  shape = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.09) if label == 0 else ((abs(yy - 0.5) < 0.1) & (abs(xx - 0.5) < 0.35))
  square[shape] = 250
  if config == 'gray':
    return square[..., None], label, shade
  image = np.zeros((h, w, 3), np.uint8)
  image[..., 0] = 255
  top, left = (h - side) // 2, (w - side) // 2
  image[top:top + side, left:left + side] = square[..., None]
  return image, label, shade


def prepare(data_dir: str) -> None:
  """Prepares the three configs of jaxssl_test_shapes into ``data_dir`` as ArrayRecord: 'rgb' (the default;
  labels and shades), 'gray', 'noimage' (no image feature)."""
  import PIL.Image  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  class JaxsslTestShapes(tfds.core.GeneratorBasedBuilder):
    """Discs and bars, for tests/test_tfds_dataset.py."""
    VERSION = tfds.core.Version('1.0.0')
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in ('rgb', 'gray', 'noimage')]

    def _info(self):
      label = tfds.features.ClassLabel(names=CLASSES)
      features = {
          'rgb': {'image': tfds.features.Image(shape=(None, None, 3)), 'label': label,
                  'shade': tfds.features.ClassLabel(names=SHADES), 'name': tfds.features.Text()},
          'gray': {'picture': tfds.features.Image(shape=(32, 32, 1)), 'label': label},
          'noimage': {'x': tfds.features.Tensor(shape=(3,), dtype=np.float32), 'label': label},
      }[self.builder_config.name]
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                   disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
      config = self.builder_config.name
      for i in range(SPLITS[split]):
        image, label, shade = draw(split, i, config)
        if config == 'noimage':
          yield i, {'x': np.zeros(3, np.float32), 'label': label}
        elif config == 'gray':
          yield i, {'picture': PIL.Image.fromarray(image[..., 0]), 'label': label}
        else:
          yield i, {'image': PIL.Image.fromarray(image), 'label': label, 'shade': shade, 'name': f'{split}{i}'}

  for config in ('rgb', 'gray', 'noimage'):
    JaxsslTestShapes(config=config, data_dir=data_dir, file_format='array_record').download_and_prepare()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """The datasets, prepared by another process, which also reads one back through jaxssl (where TensorFlow is not
  installed, as on jaxssl's CI, this shows that neither needs it)."""
  d = str(tmp_path_factory.mktemp('tfds_any'))
  out = subprocess.run([sys.executable, __file__, d], cwd=REPO, capture_output=True, text=True, timeout=120,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads(out.stdout.strip().splitlines()[-1]) == {'records': 64, 'classes': list(CLASSES)}
  return d


def data_cfg(data_dir, name=f'tfds:{NAME}', **keys):
  return ml_collections.ConfigDict({'name': name, 'data_dir': str(data_dir), 'train_split': 'train',
                                    'eval_split': 'test', 'image_key': '', 'label_key': '', 'image_size': 0,
                                    **keys})


def dataset(cfg):
  return datasets.get_dataset(cfg.name, cfg)


def split(info, name, cfg):
  return datasets.load_split(info, name, cfg)


def error(cfg) -> str:
  with pytest.raises(tfds_any.TfdsError) as e:
    datasets.check_splits(cfg)
    dataset(cfg)
  assert '\n' not in str(e.value)
  return str(e.value)


# -------------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize('value, parts', [
    ('tfds:cifar10', ('cifar10', None, None)),
    ('tfds:cifar10:3.0.2', ('cifar10', None, '3.0.2')),
    ('tfds:imagenette/160px', ('imagenette', '160px', None)),
    ('tfds:imagenette/160px:1.0.0', ('imagenette', '160px', '1.0.0')),
    ('tfds:movielens/25m-ratings', ('movielens', '25m-ratings', None)),
])
def test_name_grammar(value, parts):
  spec = tfds_any.parse_name(value)
  assert (spec.name, spec.config, spec.version) == parts
  assert f'tfds:{spec.tfds_name}' == value


@pytest.mark.parametrize('value', ['tfds:', 'tfds:Cifar10', 'tfds:cifar10:3.0', 'tfds:cifar10/a=1',
                                   'tfds:kaggle:x', 'tfds:imagenette:160px:1.0.0'])
def test_bad_names_are_one_line_with_the_grammar(value):
  with pytest.raises(tfds_any.TfdsError, match=r'tfds:NAME\[/CONFIG\]\[:VERSION\]'):
    tfds_any.parse_name(value)


def test_config_check_takes_tfds_names_and_one_line_errors_include_them():
  from jaxssl.cli import one_line_errors  # pylint: disable=import-outside-toplevel
  assert issubclass(tfds_any.TfdsError, one_line_errors())
  config = small_config('/nonexistent')   # unprepared: the config check leaves that to the dataset's own error
  config.data.name = 'tfds:cifar10'
  check_config(config)
  config.data.name = 'cifar10'
  with pytest.raises(ValueError, match=r"unknown dataset 'cifar10'; choose one of: .*tfds:NAME"):
    check_config(config)


# ------------------------------------------------------------------------------------------------ reading


def test_fixed_size_images_records_labels_and_statistics(data_dir):
  cfg = data_cfg(data_dir, name=f'tfds:{NAME}/gray:1.0.0')
  info = dataset(cfg)
  assert info.input_shape == (32, 32, 1) and info.class_names == CLASSES and info.splits == ('train', 'test')
  train = split(info, 'train', cfg)
  assert len(train) == 64 and len(split(info, 'test', cfg)) == 32
  records = train.__getitems__(list(range(64)))
  for i, r in enumerate(records):
    image, label, _ = draw('train', i, 'gray')
    np.testing.assert_array_equal(r['image'], image)   # PNG is lossless: the drawn pixels, unchanged
    assert r['label'] == label and r['index'] == i and set(r) == {'image', 'label', 'index'}
  # Statistics of all 64 training images (fewer than the sample size), cached beside the prepared files.
  pixels = np.stack([draw('train', i, 'gray')[0] for i in range(64)]) / 255.0
  np.testing.assert_allclose(info.mean, [pixels.mean()], rtol=1e-9)
  np.testing.assert_allclose(info.std, [pixels.std()], rtol=1e-6)
  cache = pathlib.Path(data_dir, NAME, 'gray', '1.0.0', tfds_any.STATS_FILE)
  assert list(json.loads(cache.read_text(encoding='utf-8')).values())[0]['images'] == 64


def test_images_stored_as_uint8_tensors_read_as_their_own_loader_reads_them(generated_tfds_dir):
  """jaxssl_fashion_mnist keeps its images as raw uint8 Tensors, not an Image feature."""
  from jaxssl.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  cfg = data_cfg(generated_tfds_dir, name='tfds:jaxssl_fashion_mnist')
  info = dataset(cfg)
  assert info.input_shape == (28, 28, 1) and info.class_names == fashion_mnist.CLASS_NAMES
  ours, theirs = split(info, 'test', cfg), fashion_mnist.data_source('test', data_dir=generated_tfds_dir)
  assert len(ours) == len(theirs)
  for i in (0, 1, len(ours) - 1):
    np.testing.assert_array_equal(ours[i]['image'], theirs[i]['image'])
    assert ours[i]['label'] == theirs[i]['label'] and ours[i]['index'] == theirs[i]['index'] == i


def test_statistics_come_from_the_cache_on_a_second_start(data_dir, monkeypatch):
  cfg = data_cfg(data_dir, name=f'tfds:{NAME}/gray')
  first = dataset(cfg)
  monkeypatch.setattr(tfds_any, 'pixel_stats', lambda *a, **k: pytest.fail('statistics computed again'))
  second = dataset(cfg)
  assert (second.mean, second.std) == (first.mean, first.std)


def test_varying_sizes_are_centre_cropped_and_resized(data_dir):
  cfg = data_cfg(data_dir, image_size=32)     # no config: the default one, 'rgb'
  info = dataset(cfg)
  assert info.input_shape == (32, 32, 3) and info.class_names == CLASSES
  records = split(info, 'train', cfg).__getitems__(list(range(64)))
  assert all(r['image'].shape == (32, 32, 3) and r['image'].dtype == np.uint8 for r in records)
  assert [r['label'] for r in records] == [draw('train', i, 'rgb')[1] for i in range(64)]
  # The red margins lay outside the centre square: a grey image is all that is left of every record.
  images = np.stack([r['image'] for r in records])
  assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
  np.testing.assert_array_equal(records[0]['image'], draw('train', 0, 'rgb')[0])   # 32x32 already: unchanged
  big = draw('train', 1, 'rgb')[0].astype(np.float64)                           # 64x64 -> 32x32: 2x2 means
  halved = big.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
  assert np.abs(records[1]['image'] - halved).mean() < 6
  assert 'varying size: set --config.data.image_size' in error(data_cfg(data_dir))


def test_label_and_image_keys_can_be_chosen(data_dir):
  cfg = data_cfg(data_dir, image_size=24, label_key='shade')
  info = dataset(cfg)
  assert info.class_names == SHADES and info.input_shape == (24, 24, 3)
  assert [r['label'] for r in split(info, 'test', cfg).__getitems__(range(8))] == [(i // 2) % 2 for i in range(8)]
  # Statistics for each size read are cached side by side (the script that prepared the data read 32x32).
  cache = json.loads(pathlib.Path(data_dir, NAME, 'rgb', '1.0.0', tfds_any.STATS_FILE).read_text(encoding='utf-8'))
  assert {k.split('|')[2] for k in cache} >= {'32x32x3', '24x24x3'}
  assert "no ClassLabel feature 'colour'; its ClassLabel features: label, shade" in error(
      data_cfg(data_dir, image_size=24, label_key='colour'))
  assert "no image feature 'photo'; its image features: image" in error(
      data_cfg(data_dir, image_size=24, image_key='photo'))
  assert 'has no image feature (its features: label, x)' in error(data_cfg(data_dir, name=f'tfds:{NAME}/noimage'))


def test_splits_slices_and_the_unknown_split(data_dir):
  cfg = data_cfg(data_dir, name=f'tfds:{NAME}/gray', train_split='train[:75%]', eval_split='train[75%:]')
  datasets.check_splits(cfg)
  info = dataset(cfg)
  train, held_out = split(info, cfg.train_split, cfg), split(info, cfg.eval_split, cfg)
  assert (len(train), len(held_out)) == (48, 16)
  np.testing.assert_array_equal(held_out[0]['image'], draw('train', 48, 'gray')[0])
  message = error(data_cfg(data_dir, name=f'tfds:{NAME}/gray', eval_split='validation'))
  assert "has no split 'validation'; it has: train, test (set --config.data.eval_split" in message


# ------------------------------------------------------------------------------------------------- errors


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  message = error(data_cfg(tmp_path, name='tfds:cifar10:3.0.2'))
  assert f'tfds build cifar10:3.0.2 --data_dir={tmp_path} --file_format=array_record' in message
  assert "catalogue has no 'jaxssl_nonexistent'" in error(data_cfg(tmp_path, name='tfds:jaxssl_nonexistent'))


def test_another_config_or_version_than_the_prepared_ones_is_not_prepared(data_dir):
  message = error(data_cfg(data_dir, name=f'tfds:{NAME}/gray:2.0.0'))
  assert f'tfds build {NAME}/gray:2.0.0 --data_dir=' in message
  assert '(prepared there: gray:1.0.0, noimage:1.0.0, rgb:1.0.0)' in message


def test_dataset_prepared_as_tfrecord_says_to_rebuild(data_dir, tmp_path):
  version = pathlib.Path(data_dir, NAME, 'gray', '1.0.0')
  copy = tmp_path / NAME / 'gray' / '1.0.0'
  shutil.copytree(version, copy)
  info = json.loads((copy / 'dataset_info.json').read_text(encoding='utf-8'))
  (copy / 'dataset_info.json').write_text(json.dumps({**info, 'fileFormat': 'tfrecord'}), encoding='utf-8')
  message = error(data_cfg(tmp_path, name=f'tfds:{NAME}/gray'))
  assert 'as tfrecord, which cannot be read at random' in message
  assert f'tfds convert_format --dataset_version_dir={copy} --out_file_format=array_record' in message
  assert f'tfds build {NAME}/gray --data_dir={tmp_path} --file_format=array_record --overwrite' in message


# ------------------------------------------------------------------------------------------------ training


def test_a_short_training_run_learns_the_classes(data_dir, tmp_path):
  from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
  config = small_config(data_dir, **{'data.name': f'tfds:{NAME}/gray', 'data.train_limit': 0,
                                     'data.eval_limit': 0, 'batch_size': 16, 'eval_batch_size': 32,
                                     'total_steps': 16, 'eval_every': 16, 'checkpoint_every': 16, 'optim.lr': 0.01})
  check_config(config)
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary['finished'] and summary['step'] == 16
  # Discs and bars are told apart on the 32 test images after 16 steps (measured: 100%; chance 50%).
  assert summary['eval']['classify/top1'] >= 0.9
  assert set(summary['eval']['classify/per_class_top1']) == set(CLASSES)

if __name__ == '__main__':
  prepare(sys.argv[1])
  described = datasets.get_dataset(f'tfds:{NAME}', data_cfg(sys.argv[1], image_size=32))
  print(json.dumps({'records': len(described.load('train', None)), 'classes': list(described.class_names)}))
