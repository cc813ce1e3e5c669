"""DeepFashion datasets: the benchmark builder on generated files in the exact official format, the real
attribute-challenge sample, and the image-folder + CSV layout."""

import json
import pathlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxssl.data import datasets, deepfashion, deepfashion_layouts, pipeline, prepared
from jaxssl.data.sources import read_records

CATEGORIES = [('Anorak', 1), ('Blazer', 1), ('Jeans', 2), ('Dress', 3)]
# One name with spaces, as in the official list ("a-line", "faux leather", ...).
ATTRIBUTES = [('floral', 1), ('faux leather', 2), ('a-line', 3), ('long sleeve', 4), ('boho', 5)]


def _counted_file(path: pathlib.Path, header: str, rows) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f'{len(rows)}\n{header}\n' + ''.join(f'{r}\n' for r in rows))


def _image(path: pathlib.Path, h: int, w: int, seed: int) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)
  Image.fromarray(pixels).save(path, quality=95)


def make_benchmark(root: pathlib.Path):
  """10 images in the official layout: 8 real, one missing file, one corrupt file. Returns the truth."""
  truth = []
  partitions = ['train'] * 6 + ['val'] * 2 + ['test'] * 2
  for i, split in enumerate(partitions):
    path = f'img/Floral_A-Line_Dress/img_{i + 1:08d}.jpg'
    h, w = 30 + 4 * i, 50 - 2 * i
    category = 1 + i % 4                         # 1-based, as in list_category_img.txt
    values = [(-1, 0, 1)[(i + a) % 3] for a in range(len(ATTRIBUTES))]
    bbox = (2, 3, w - 4, h - 5)
    truth.append({'path': path, 'split': split, 'hw': (h, w), 'category': category, 'values': values, 'bbox': bbox})
    if i == 4:
      continue                                   # listed everywhere, but no file: the missing image
    if i == 7:
      (root / path).parent.mkdir(parents=True, exist_ok=True)
      (root / path).write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')   # the corrupt image
      continue
    _image(root / path, h, w, seed=i)
  _counted_file(root / 'Anno/list_category_cloth.txt', 'category_name  category_type',
                [f'{n:<20}{t}' for n, t in CATEGORIES])
  _counted_file(root / 'Anno/list_attr_cloth.txt', 'attribute_name  attribute_type',
                [f'{n:<30}{t}' for n, t in ATTRIBUTES])
  _counted_file(root / 'Anno/list_category_img.txt', 'image_name  category_label',
                [f"{t['path']:<60}{t['category']}" for t in truth])
  _counted_file(root / 'Anno/list_attr_img.txt', 'image_name  attribute_labels',
                [f"{t['path']:<60}" + ' '.join(f'{v:>2}' for v in t['values']) for t in truth])
  _counted_file(root / 'Anno/list_bbox.txt', 'image_name  x_1  y_1  x_2  y_2',
                [f"{t['path']:<60}" + ' '.join(map(str, t['bbox'])) for t in truth])
  _counted_file(root / 'Eval/list_eval_partition.txt', 'image_name  evaluation_status',
                [f"{t['path']:<60}{t['split']}" for t in truth])
  return truth


def data_cfg(source_dir, data_dir, **kw):
  return ml_collections.ConfigDict({'source_dir': str(source_dir), 'data_dir': str(data_dir), 'image_size': 32,
                                    'crop_bbox': False, 'image_format': 'png', 'prepare_workers': 2, **kw})


@pytest.fixture(scope='module')
def benchmark(tmp_path_factory):
  root = tmp_path_factory.mktemp('deepfashion')
  return root, make_benchmark(root)


def test_benchmark_builder_on_official_format(benchmark, tmp_path):
  root, truth = benchmark
  cfg = data_cfg(root, tmp_path)
  info = datasets.get_dataset('deepfashion', cfg)
  assert info.input_shape == (32, 32, 3) and info.splits == ('train', 'val', 'test')
  assert info.class_names == tuple(n for n, _ in CATEGORIES) and info.category_base == 1
  assert info.attribute_names == tuple(n for n, _ in ATTRIBUTES)   # 'faux leather' keeps its space
  assert info.attribute_groups == (1, 2, 3, 4, 5) and not info.exclusive_groups
  b = deepfashion.builder('benchmark', cfg)
  skipped = deepfashion.skipped_images(b)
  assert [s['file_path'] for s in skipped['train']] == [truth[4]['path']]
  assert skipped['train'][0]['reason'] == 'missing'
  assert [s['file_path'] for s in skipped['val']] == [truth[7]['path']]
  assert skipped['val'][0]['reason'].startswith('unreadable')
  report = json.loads((pathlib.Path(b.data_dir) / 'skipped_images.json').read_text())
  assert report['counts']['train'] == {'annotated': 6, 'written': 5}
  for split in ('train', 'val', 'test'):
    src = datasets.load_split(info, split, cfg)
    expected = [t for i, t in enumerate(truth) if t['split'] == split and i not in (4, 7)]
    records = read_records(src, range(len(src)))
    assert len(records) == len(expected)
    for i, (r, t) in enumerate(zip(records, expected)):
      assert r['file_path'].decode() == t['path'] and r['index'] == i
      assert r['category'] == t['category'] - 1                            # stored 0-based
      np.testing.assert_array_equal(r['attributes'], [int(v == 1) for v in t['values']])   # -1 and 0: negative
      assert r['has_attributes'] == 1 and tuple(r['image_hw']) == t['hw']
      np.testing.assert_array_equal(r['image'], deepfashion.load_image(root / t['path'], 32)[0])   # PNG: exact
  # The attribute frequency is the training split's (the missing image is not counted).
  train = [t for i, t in enumerate(truth) if t['split'] == 'train' and i != 4]
  np.testing.assert_allclose(info.attribute_frequency, np.mean([[v == 1 for v in t['values']] for t in train], 0))


def test_benchmark_crop_to_bbox_and_size_follow_the_config(benchmark, tmp_path):
  root, truth = benchmark
  cfg = data_cfg(root, tmp_path, image_size=24, crop_bbox=True, image_format='jpeg')
  info = datasets.get_dataset('deepfashion', cfg)
  assert info.input_shape == (24, 24, 3)
  r = datasets.load_split(info, 'train', cfg)[0]
  x1, y1, x2, y2 = truth[0]['bbox']
  assert r['image'].shape == (24, 24, 3) and tuple(r['image_hw']) == (y2 - y1, x2 - x1)
  # Other sizes and the uncropped copy live beside it under their own config names.
  names = sorted(p.name for p in (tmp_path / 'jaxssl_deepfashion').iterdir())
  assert len(names) == 1 and names[0].startswith('benchmark_24px_bbox_jpeg_')


def test_benchmark_count_line_and_missing_rows_are_reported(benchmark, tmp_path):
  root, _ = benchmark
  bad = tmp_path / 'bad'
  for f in root.rglob('*.txt'):
    (bad / f.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
    (bad / f.relative_to(root)).write_text(f.read_text())
  (bad / 'img').mkdir()
  lines = (bad / 'Anno/list_bbox.txt').read_text().splitlines()
  (bad / 'Anno/list_bbox.txt').write_text('\n'.join(lines[:-1]) + '\n')      # one row short of its count
  with pytest.raises(deepfashion_layouts.AnnotationError, match='line 1 says 10 records but the file has 9'):
    deepfashion_layouts.read_annotations('benchmark', bad)
  (bad / 'Anno/list_bbox.txt').write_text('\n'.join(['9', *lines[1:-1]]) + '\n')
  with pytest.raises(deepfashion_layouts.AnnotationError, match='list_bbox.txt has no line for 1 image'):
    deepfashion_layouts.read_annotations('benchmark', bad)
  with pytest.raises(deepfashion.DataNotFoundError, match='Anno/list_attr_img.txt'):
    deepfashion.builder('benchmark', data_cfg(tmp_path / 'nowhere', tmp_path))


# --------------------------------------------------------------------------------------- the real sample

GROUP_SIZES = (7, 3, 3, 4, 6, 3)   # texture, sleeve, length, neckline, fabric, fit (SOURCE.md)


def test_real_attribute_sample(deepfashion_sample, tmp_path, capsys, monkeypatch):
  cfg = data_cfg(deepfashion_sample, tmp_path, image_size=32)
  monkeypatch.setattr(prepared, 'PROGRESS_S', 0.0)   # a progress line after every chunk of images
  info = datasets.get_dataset('deepfashion_attr', cfg)
  out = capsys.readouterr().out
  # jaxssl's lines: what is prepared where, how far each split is, where the copy is; not tfds' "Downloading and
  # preparing dataset Unknown size ..." (nothing is downloaded).
  assert f'DeepFashion attr_challenge {deepfashion_sample}: preparing once at 32 px into {tmp_path}' in out
  for split, n in (('train', 287), ('val', 35), ('test', 35)):
    assert f'DeepFashion attr_challenge {split}: {n} / {n} images (' in out
    assert f'DeepFashion attr_challenge {split}: {n} images prepared in ' in out
  assert f's: {tmp_path}' in out.splitlines()[-1] and 'later runs read it' in out.splitlines()[-1]
  assert 'Downloading' not in out and 'downloaded' not in out
  # pylint: disable-next=use-implicit-booleaness-not-comparison  # == (): exactly an empty tuple, not any falsy value
  assert info.class_names == () and len(info.attribute_names) == 26 and info.exclusive_groups
  assert info.attribute_names[:3] == ('floral', 'graphic', 'striped') and info.attribute_names[-1] == 'conventional'
  split_dir = pathlib.Path(deepfashion_sample) / 'split'
  paths = split_dir.joinpath('train.txt').read_text().split()
  classes = [list(map(int, line.split())) for line in split_dir.joinpath('train_attr.txt').read_text().splitlines()]
  offsets = np.cumsum((0,) + GROUP_SIZES[:-1])
  sources = {s: datasets.load_split(info, s, cfg) for s in info.splits}
  assert {s: len(v) for s, v in sources.items()} == {'train': 287, 'val': 35, 'test': 35}   # 80/10/10 by position
  for split, positions in (('train', [0, 1, 2, 100, 286]), ('val', [0, 34]), ('test', [0, 3])):
    for pos, r in zip(positions, read_records(sources[split], positions)):
      line = {'train': (pos // 8) * 10 + pos % 8, 'val': pos * 10 + 8, 'test': pos * 10 + 9}[split]
      assert r['file_path'].decode() == paths[line]
      assert sorted(np.flatnonzero(r['attributes']).tolist()) == sorted((offsets + classes[line]).tolist())
      assert r['attributes'].sum() == 6 and r['category'] == -1
      with Image.open(pathlib.Path(deepfashion_sample) / paths[line]) as im:
        assert tuple(r['image_hw']) == (im.height, im.width)
  assert all(not v for v in deepfashion.skipped_images(deepfashion.builder('attr_challenge', cfg)).values())


# ------------------------------------------------------------------------------------------------ csv folder


def test_image_folder_with_csv(tmp_path):
  root = tmp_path / 'course'
  for i in range(6):
    _image(root / 'images' / f'{i}.jpg', 20, 30, seed=i)
  (root / 'categories.txt').write_text('Blouse\nShorts\nDress\n')
  (root / 'attributes.txt').write_text('floral\nlong sleeve\ndenim\nloose\n')
  (root / 'train.csv').write_text('file_path,category,attributes\nimages/0.jpg,0,1 3\nimages/1.jpg,Dress,\n'
                                  'images/2.jpg,1,0\nimages/3.jpg,2,"2 3"\n')
  (root / 'test.csv').write_text('file_path\nimages/4.jpg\nimages/5.jpg\n')     # unlabelled
  cfg = data_cfg(root, tmp_path / 'tfds')
  info = datasets.get_dataset('image_csv', cfg)
  assert info.splits == ('train', 'test') and info.class_names == ('Blouse', 'Shorts', 'Dress')
  assert info.attribute_names == ('floral', 'long sleeve', 'denim', 'loose') and info.category_base == 0
  train = read_records(datasets.load_split(info, 'train', cfg), range(4))
  assert [r['category'] for r in train] == [0, 2, 1, 2]
  assert [np.flatnonzero(r['attributes']).tolist() for r in train] == [[1, 3], [], [0], [2, 3]]
  test = read_records(datasets.load_split(info, 'test', cfg), range(2))
  assert [(r['category'], r['has_attributes'], r['file_path'].decode()) for r in test] == \
      [(-1, 0, 'images/4.jpg'), (-1, 0, 'images/5.jpg')]
  batch = pipeline.stack_records(train)
  assert batch['attributes'].shape == (4, 4) and batch['image_hw'].tolist() == [[20, 30]] * 4
  assert 'file_path' not in batch    # text stays on the host
