"""Your own images (jaxssl/data/image_folder.py): real-format files made with PIL (JPEG, PNG, WebP, BMP, GIF, RGBA,
CMYK, grey, 16-bit, an EXIF-rotated JPEG, corrupt files), the three layouts, the held-out split rule, the one-line
errors, a short training run on real photographs (the DeepFashion sample as a Kaggle-style folder) and the
one-line refusal of a labelled task on a flat folder."""

import json
import logging
import pathlib
import zlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import common, fmnist_rotation, fmnist_supervised
from jaxssl import cli
from jaxssl.config_check import check_config
from jaxssl.data import datasets, image_folder, sample_folder
from jaxssl.data.sources import read_records
from jaxssl.tasks import build_tasks
from jaxssl.train import experiment, loop


def _pixels(h, w, seed):
  """A smooth colour gradient with a little noise: survives JPEG well, differs from image to image."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w]
  base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), np.full((h, w), 40 + 20 * (seed % 8))], -1)
  return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def _save(path: pathlib.Path, image: Image.Image, **kwargs) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path, **kwargs)
  return path


def _photo(path, seed=0, h=24, w=32, **kwargs):
  return _save(pathlib.Path(path), Image.fromarray(_pixels(h, w, seed)), **kwargs)


def data_cfg(source_dir, data_dir, **kw):
  return ml_collections.ConfigDict({'source_dir': str(source_dir), 'data_dir': str(data_dir), 'image_size': 16,
                                    'resize': 'crop', 'channels': 3, 'image_format': 'png', 'val_fraction': 0.1,
                                    'test_fraction': 0.1, 'prepare_workers': 2, **kw})


# ----------------------------------------------------------------------------------------------- pixels


def test_transparency_cmyk_grey_and_16_bit_become_rgb(tmp_path):
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[:, 8:] = (200, 30, 10, 255)                       # right half opaque red, left half fully transparent black
  path = _save(tmp_path / 'rgba.png', Image.fromarray(rgba, 'RGBA'))
  out = image_folder.load_image(path, 16, 'squash')
  assert (out[:, :7] == 255).all()                       # transparent: composited on white
  np.testing.assert_array_equal(out[:, 9:], np.broadcast_to((200, 30, 10), (16, 7, 3)))
  rgb = _pixels(16, 16, 1)
  path = _save(tmp_path / 'cmyk.jpg', Image.fromarray(rgb).convert('CMYK'), quality=95)
  assert Image.open(path).mode == 'CMYK'
  out = image_folder.load_image(path, 16, 'squash').astype(int)
  assert np.abs(out - rgb).mean() < 6                    # back to (nearly) the same colours
  path = _save(tmp_path / 'grey.png', Image.fromarray(rgb[..., 0]))
  out = image_folder.load_image(path, 16, 'squash')
  assert out.shape == (16, 16, 3) and (out == rgb[..., :1]).all()
  assert image_folder.load_image(path, 16, 'squash', channels=1).shape == (16, 16, 1)
  path = _save(tmp_path / 'deep.png', Image.fromarray(np.full((16, 16), 65535, np.uint16)))
  assert (image_folder.load_image(path, 16, 'squash') == 255).all()    # 16-bit white stays white
  palette = Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE, colors=16)
  palette.info['transparency'] = 0
  out = image_folder.load_image(_save(tmp_path / 'pal.gif', palette, transparency=0), 16, 'squash')
  assert (out[np.asarray(palette) == 0] == 255).all() and (np.asarray(palette) == 0).any()


def test_exif_orientation_is_applied(tmp_path):
  stored = np.zeros((20, 40, 3), np.uint8)              # 40 wide, 20 tall; a red block in the top-left quarter
  stored[:10, :20] = (255, 0, 0)
  exif = Image.Exif()
  exif[0x0112] = 6                                       # "rotate 90 degrees clockwise to display"
  path = _save(tmp_path / 'phone.jpg', Image.fromarray(stored), exif=exif, quality=95)
  out = image_folder.load_image(path, 32, 'squash').astype(int)
  # Displayed 20 wide, 40 tall, the block in the top-right quarter (squashed to 32 x 32: rows < 16, columns >= 16).
  red = (out[..., 0] > 128) & (out[..., 1] < 100)
  assert red[2:14, 18:30].all() and not red[18:, :].any() and not red[:, :14].any()


def test_crop_keeps_the_centred_square_and_squash_the_whole(tmp_path):
  wide = np.zeros((16, 48, 3), np.uint8)
  wide[:, 16:32] = 255                                   # the centre square is white, the sides black
  path = _save(tmp_path / 'wide.png', Image.fromarray(wide))
  assert (image_folder.load_image(path, 16, 'crop') == 255).all()
  squashed = image_folder.load_image(path, 16, 'squash')
  assert (squashed[:, :4] == 0).all() and (squashed[:, 6:10] == 255).all()


# ---------------------------------------------------------------------------------------------- layouts


def make_formats_folder(root: pathlib.Path) -> dict[str, str]:
  """Two classes of files in every format (and two corrupt ones); returns {path: class}."""
  files = {}
  for cls, seed in (('apple', 0), ('pear', 50)):
    for i, (ext, kw) in enumerate((('jpg', {'quality': 95}), ('png', {}), ('webp', {'quality': 90}),
                                   ('bmp', {}), ('JPEG', {'quality': 95}), ('tiff', {}))):
      _photo(root / cls / f'{i}.{ext}', seed + i, format={'jpg': 'JPEG', 'JPEG': 'JPEG'}.get(ext), **kw)
      files[f'{cls}/{i}.{ext}'] = cls
  _save(root / 'apple/rgba.png', Image.fromarray(np.full((20, 20, 4), 128, np.uint8), 'RGBA'))
  _save(root / 'pear/deep/cmyk.jpg', Image.fromarray(_pixels(20, 20, 3)).convert('CMYK'))   # nested: counted
  files.update({'apple/rgba.png': 'apple', 'pear/deep/cmyk.jpg': 'pear'})
  (root / 'apple/truncated.jpg').write_bytes((root / 'apple/0.jpg').read_bytes()[:300])
  (root / 'pear/garbage.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4)
  (root / 'pear/notes.txt').write_text('not an image')
  (root / '.ipynb_checkpoints').mkdir()                  # hidden: not a class
  (root / '.ipynb_checkpoints/x.png').write_bytes(b'')
  return files


def test_class_folders_every_format_and_corrupt_files(tmp_path):
  root = tmp_path / 'photos'
  files = make_formats_folder(root)
  cfg = data_cfg(root, tmp_path / 'tfds', val_fraction=0.0, test_fraction=0.0)
  info = datasets.get_dataset('image_folder', cfg)
  assert info.class_names == ('apple', 'pear') and info.input_shape == (16, 16, 3) and info.splits == ('train',)
  assert not info.no_labels
  b = image_folder.builder(cfg)
  assert b.info.metadata['layout'] == 'classes'
  skipped = image_folder.skipped_images(b)['train']
  assert sorted(s['file_path'] for s in skipped) == ['apple/truncated.jpg', 'pear/garbage.png']
  assert all(s['reason'].startswith('unreadable') for s in skipped)
  report = json.loads((pathlib.Path(b.data_dir) / 'skipped_images.json').read_text())
  assert report['counts']['train'] == {'listed': len(files) + 2, 'written': len(files)}
  assert any('1 file(s) that are not images' in n for n in b.info.metadata['notes'])
  src = datasets.load_split(info, 'train', cfg)
  records = read_records(src, range(len(src)))
  assert [r['file_path'].decode() for r in records] == sorted(files)   # sorted by path
  assert [info.class_names[r['label']] for r in records] == [files[p] for p in sorted(files)]
  assert [r['index'] for r in records] == list(range(len(files)))
  for r in records:   # PNG storage: exactly what load_image makes of the file
    np.testing.assert_array_equal(r['image'], image_folder.load_image(root / r['file_path'].decode(), 16))
  images = np.stack([r['image'] for r in records]).reshape(-1, 3) / 255
  np.testing.assert_allclose(info.mean, images.mean(0), atol=1e-4)
  np.testing.assert_allclose(info.std, images.std(0), atol=1e-4)
  # Another size, or grey, is another prepared copy beside this one; grey JPEG records come back [S, S, 1].
  grey = data_cfg(root, tmp_path / 'tfds', image_size=24, channels=1, image_format='jpeg')
  info = datasets.get_dataset('image_folder', grey)
  assert info.input_shape == (24, 24, 1) and len(info.mean) == 1
  assert datasets.load_split(info, 'train', grey)[0]['image'].shape == (24, 24, 1)
  assert len(list((tmp_path / 'tfds' / 'jaxssl_image_folder').iterdir())) == 2


def test_split_folders_validation_and_held_out_test(tmp_path):
  root = tmp_path / 'imagenet_like'
  for split, n in (('train', 12), ('validation', 3)):
    for cls in ('cat', 'dog'):
      for i in range(n):
        _photo(root / split / cls / f'{cls}_{i}.jpg', i)
  plan = image_folder.scan(root)
  assert plan.layout == 'classes' and plan.class_names == ('cat', 'dog') and plan.given == ('train', 'val')
  assert [p for p, _ in plan.splits['val']] == sorted(f'validation/{c}/{c}_{i}.jpg' for c in ('cat', 'dog')
                                                       for i in range(3))
  assert {len(plan.splits['train']), len(plan.splits['test'])} == {22, 2}   # test: 1 of 12 per class from train
  assert all(p.startswith('train/') for s in ('train', 'test') for p, _ in plan.splits[s])
  assert all(label == ('dog' in p) for s in plan.splits for p, label in plan.splits[s])


def test_kaggle_names_and_its_unlabelled_test1(tmp_path):
  root = tmp_path / 'dogs-vs-cats'
  for i in range(10):
    _photo(root / 'train' / f'cat.{i}.jpg', i)
    _photo(root / 'train' / f'dog.{i}.jpg', 20 + i)
    _photo(root / 'test1' / f'{i + 1}.jpg', 40 + i)
  (root / 'sampleSubmission.csv').write_text('id,label\n')
  plan = image_folder.scan(root)
  assert plan.layout == 'names' and plan.class_names == ('cat', 'dog') and plan.given == ('train',)
  assert {s: len(v) for s, v in plan.splits.items()} == {'train': 16, 'val': 2, 'test': 2}
  assert all(p.split('/')[1].split('.')[0] == plan.class_names[label] for v in plan.splits.values() for p, label in v)
  assert any('test1' in n and 'not used' in n for n in plan.notes)
  # The Kaggle train/ folder given directly works the same, without the note.
  assert image_folder.scan(root / 'train').class_names == ('cat', 'dog')
  assert image_folder.name_label('cat.12.jpg') == 'cat' and image_folder.name_label('IMG_0001.jpg') is None
  assert image_folder.name_label('2019.07.jpg') is None


def test_flat_folder_has_no_labels(tmp_path, caplog):
  root = tmp_path / 'holiday'
  for i in range(10):
    _photo(root / f'IMG_{i:04d}.jpg', i)
  cfg = data_cfg(root, tmp_path / 'tfds')
  info = datasets.get_dataset('image_folder', cfg)
  # pylint: disable-next=use-implicit-booleaness-not-comparison  # == (): exactly no class names
  assert info.class_names == () and info.num_classes == 0 and info.splits == ('train', 'val', 'test')
  assert info.no_labels.startswith(f'image folder {root.resolve()} has no labels (flat layout')
  records = read_records(datasets.load_split(info, 'train', cfg), range(8))
  assert all('label' not in r for r in records) and records[0]['image'].shape == (16, 16, 3)
  # Images added later: the prepared copy is used as it is, with a warning that says how to refresh it.
  _photo(root / 'IMG_0100.jpg', 100)
  image_folder.builder(cfg)
  assert 'changed since it was prepared' in caplog.text and 'Delete that folder' in caplog.text


# ------------------------------------------------------------------------------------------- split rule


def test_held_out_splits_are_stratified_deterministic_and_disjoint(tmp_path):
  root = tmp_path / 'classes'
  sizes = {'a': 25, 'b': 10, 'c': 3, 'd': 2}
  for cls, n in sizes.items():
    for i in range(n):
      (root / cls).mkdir(parents=True, exist_ok=True)
      (root / cls / f'{i:02d}.png').write_bytes(b'')       # names only: scan never opens a file
  plan = image_folder.scan(root, val_fraction=0.2, test_fraction=0.1)
  assert plan == image_folder.scan(root, val_fraction=0.2, test_fraction=0.1)
  everything = sorted(p for v in plan.splits.values() for p, _ in v)
  assert everything == sorted(f'{c}/{i:02d}.png' for c, n in sizes.items() for i in range(n))   # disjoint, complete
  for label, (cls, n) in enumerate(sizes.items()):
    counts = {s: sum(1 for _, y in v if y == label) for s, v in plan.splits.items()}
    n_val, n_test = image_folder.held_out_counts(n, 0.2, 0.1)
    assert counts == {'train': n - n_val - n_test, 'val': n_val, 'test': n_test}
    # The stated rule: sorted paths, permuted by default_rng([0, crc32(class)]); test first, then val.
    order = np.random.default_rng([0, zlib.crc32(cls.encode())]).permutation(n)
    paths = sorted(f'{cls}/{i:02d}.png' for i in range(n))
    assert sorted(p for p, y in plan.splits['test'] if y == label) == sorted(paths[i] for i in order[:n_test])
  assert image_folder.held_out_counts(25, 0.2, 0.1) == (5, 3)      # 2.5 rounds up
  assert image_folder.held_out_counts(3, 0.2, 0.1) == (1, 1)       # at least one each from 3 images
  assert image_folder.held_out_counts(2, 0.2, 0.1) == (0, 0)
  # A different val fraction moves no test image; adding a class moves no other class's images.
  assert image_folder.scan(root, 0.3, 0.1).splits['test'] == plan.splits['test']
  for i in range(5):
    (root / 'e').mkdir(exist_ok=True)
    (root / 'e' / f'{i}.png').write_bytes(b'')
  grown = image_folder.scan(root, val_fraction=0.2, test_fraction=0.1)
  assert [p for p, _ in grown.splits['val'] if not p.startswith('e/')] == [p for p, _ in plan.splits['val']]


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize('make,error,message', [
    (lambda r: None, image_folder.ImageFolderNotFoundError, r'image folder .*/nowhere does not exist: point '
                                                           r'--config.data.source_dir'),
    (lambda r: r.mkdir(), image_folder.ImageFolderError, r'image folder .*/top holds no images \(.jpg'),
    (lambda r: (_photo(r / 'cat/1.jpg'), (r / 'dog').mkdir(), (r / 'dog/x.txt').write_text('')),
     image_folder.ImageFolderError, r'class folder .*/top/dog holds no images .*add its images or remove the folder'),
    (lambda r: (_photo(r / 'cat/1.jpg'), _photo(r / 'loose.jpg')), image_folder.ImageFolderError,
     r'/top mixes class folders \(cat\) with 1 loose image\(s\) \(loose.jpg\): move the loose images'),
    (lambda r: (_photo(r / 'train/cat/1.jpg'), _photo(r / 'dog/1.jpg')), image_folder.ImageFolderError,
     r'/top mixes split folders \(train/\) with other folders \(dog\): put the class folders inside train/'),
    (lambda r: (_photo(r / 'train/cat/1.jpg'), _photo(r / 'x.png')), image_folder.ImageFolderError,
     r'mixes split folders \(train/\) with 1 loose image\(s\) \(x.png\): move them into train/'),
    (lambda r: _photo(r / 'val/cat/1.jpg'), image_folder.ImageFolderError, r'has val/ but no train/: add train/'),
    (lambda r: (_photo(r / 'train/cat/1.jpg'), _photo(r / 'val/cat.1.jpg'), _photo(r / 'val/dog.1.jpg')),
     image_folder.ImageFolderError, r'train/ has class folders but val/ has labels in file names'),
    (lambda r: (_photo(r / 'train/cat/1.jpg'), _photo(r / 'test/owl/1.jpg')), image_folder.ImageFolderError,
     r'/test has class\(es\) that train/ has not: owl'),
])
def test_each_fault_is_one_line_naming_the_fix(tmp_path, make, error, message):
  root = tmp_path / ('nowhere' if error is image_folder.ImageFolderNotFoundError else 'top')
  make(root)
  with pytest.raises(error, match=message) as e:
    image_folder.builder(data_cfg(root, tmp_path / 'tfds'))
  assert '\n' not in str(e.value) and isinstance(e.value, cli.one_line_errors())
  assert not (tmp_path / 'tfds').exists()                # refused before anything was written


def test_missing_setting_and_bad_options_are_one_line(tmp_path, monkeypatch):
  monkeypatch.delenv(image_folder.ENV_VAR, raising=False)
  with pytest.raises(image_folder.ImageFolderNotFoundError, match='no image folder given: set '
                                                                  '--config.data.source_dir=DIR or'):
    image_folder.builder(data_cfg('', tmp_path))
  _photo(tmp_path / 'env/a.jpg')
  monkeypatch.setenv(image_folder.ENV_VAR, str(tmp_path / 'env'))
  assert image_folder.find_source_dir('') == (tmp_path / 'env').resolve()
  with pytest.raises(image_folder.ImageFolderError, match=r"resize='zoom' must be one of: crop, squash; "
                                                          r'--config.data.channels=2 must be 3'):
    image_folder.builder(data_cfg(tmp_path / 'env', tmp_path, resize='zoom', channels=2))


# -------------------------------------------------------------------------------- the sample and a real run


def test_sample_folder_layouts(deepfashion_sample, tmp_path):
  files = sample_folder.make_sample_folder(tmp_path / 'kaggle', sample_dir=deepfashion_sample)
  assert len(files) == 357 and files['train/long_sleeve.0.jpg'] == 'long_sleeve'
  assert sample_folder.make_sample_folder(tmp_path / 'kaggle', sample_dir=deepfashion_sample) == files  # idempotent
  plan = image_folder.scan(tmp_path / 'kaggle')
  assert plan.layout == 'names' and plan.class_names == ('long_sleeve', 'short_sleeve', 'sleeveless')
  counts = [sum(1 for v in plan.splits.values() for _, y in v if y == c) for c in range(3)]
  assert counts == [119, 55, 183]                        # the sleeve group of SOURCE.md's sample
  two = sample_folder.make_sample_folder(tmp_path / 'splits', 'splits', classes=('long_sleeve', 'sleeveless'),
                                         per_class=10, sample_dir=deepfashion_sample)
  plan = image_folder.scan(tmp_path / 'splits')
  assert len(two) == 20 and plan.given == ('train', 'val') and len(plan.splits['val']) == 4
  sample_folder.make_sample_folder(tmp_path / 'flat', 'flat', per_class=3, sample_dir=deepfashion_sample)
  assert image_folder.scan(tmp_path / 'flat').layout == 'flat'
  with pytest.raises(FileExistsError, match='is not empty'):
    sample_folder.make_sample_folder(tmp_path / 'flat', 'classes', sample_dir=deepfashion_sample)


def _run_config(base, source_dir, tmp_path):
  c = base
  c.data.name, c.data.source_dir, c.data.data_dir = 'image_folder', str(source_dir), str(tmp_path / 'tfds')
  c.data.image_size, c.data.eval_split = 32, 'val'
  c.data.train_limit = c.data.eval_limit = 0
  c.batch_size, c.eval_batch_size, c.total_steps = 16, 64, 6
  c.log_every, c.eval_every, c.checkpoint_every = 1, 6, 6
  c.optim.warmup_epochs = 0.0
  return c


def test_rotation_run_on_a_kaggle_style_folder_of_real_photos(deepfashion_sample, tmp_path):
  src = tmp_path / 'sleeves'
  sample_folder.make_sample_folder(src, classes=('long_sleeve', 'sleeveless'), per_class=60,
                                   sample_dir=deepfashion_sample)
  config = _run_config(fmnist_rotation.get_config(), src, tmp_path)
  config.online_probe.knn_k = 20
  check_config(config)                                   # every key the override needs is in the base config
  out = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert out['finished'] and out['step'] == 6
  assert 0 <= out['eval']['rotation/acc'] <= 1 and 'probe/top1' in out['eval']   # the probe reads the labels
  assert np.isfinite(out['eval']['rotation/loss'])


def test_labelled_task_on_a_flat_folder_is_one_line(deepfashion_sample, tmp_path, capsys):
  src = tmp_path / 'flat'
  sample_folder.make_sample_folder(src, 'flat', per_class=8, sample_dir=deepfashion_sample)
  config = _run_config(fmnist_supervised.get_config(), src, tmp_path)
  check_config(config)
  with pytest.raises(SystemExit) as e, cli.errors_as_one_line():
    experiment.build_experiment(config)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]   # after tfds' progress bars
  assert err.startswith(f'error: image folder {src.resolve()} has no labels (flat layout')
  assert "task 'classify': the dataset has no class labels" in err
  # The rotation pretext task needs none (with the online probe, which would read them, turned off).
  config = _run_config(fmnist_rotation.get_config(), src, tmp_path)
  with pytest.raises(experiment.DatasetMismatchError, match=r"has no labels \(flat layout.*task 'probe'"):
    experiment.build_experiment(config)
  config.online_probe.enabled = False
  assert experiment.build_experiment(config).info.num_classes == 0


def test_base_config_has_the_image_folder_keys():
  d = common.data_config('image_folder')
  assert (d.resize, d.channels, d.val_fraction, d.test_fraction, d.image_format) == ('crop', 3, 0.1, 0.1, 'jpeg')


def test_a_linked_folder_counts_once_and_a_link_cycle_ends(tmp_path):
  root = tmp_path / 'pets'
  for c in ('cat', 'dog'):
    for i in range(5):
      _photo(root / c / f'{i}.png', seed=i)
  (root / 'cat' / 'again').symlink_to(root / 'cat')    # a cycle back to its own folder
  plan = image_folder.scan(root, 0.2, 0.2)
  records = [r for split in plan.splits.values() for r in split]
  assert len(records) == 10 and len({p for p, _ in records}) == 10   # no image twice, none in two splits


def test_val_gives_way_so_test_does_not_depend_on_val_fraction():
  for n in range(1, 30):
    tests = {image_folder.held_out_counts(n, v, 0.5)[1] for v in (0.0, 0.1, 0.3)}
    assert len(tests) == 1, n
  assert image_folder.held_out_counts(3, 0.1, 0.5) == (0, 2)
  assert image_folder.held_out_counts(10, 0.1, 0.1) == (1, 1)


def test_an_interrupted_sample_folder_is_made_again(deepfashion_sample, tmp_path, monkeypatch):
  calls = []
  real_copy = sample_folder.shutil.copyfile

  def failing_copy(src, dst):
    calls.append(dst)
    if len(calls) == 5:
      raise KeyboardInterrupt   # Ctrl-C in the middle of the copy
    return real_copy(src, dst)

  monkeypatch.setattr(sample_folder.shutil, 'copyfile', failing_copy)
  with pytest.raises(KeyboardInterrupt):
    sample_folder.make_sample_folder(tmp_path / 'kaggle', per_class=3, sample_dir=deepfashion_sample)
  assert not (tmp_path / 'kaggle').exists() and not list(tmp_path.iterdir())   # nothing half-made left behind
  monkeypatch.setattr(sample_folder.shutil, 'copyfile', real_copy)
  files = sample_folder.make_sample_folder(tmp_path / 'kaggle', per_class=3, sample_dir=deepfashion_sample)
  assert len(files) == 9 and all((tmp_path / 'kaggle' / f).is_file() for f in files)


# ------------------------------------------------------------------ first preparation, unusable folders (audit)


def _classes(root: pathlib.Path, sizes: dict[str, int], corrupt: bool = False) -> pathlib.Path:
  """Class folders of ``sizes`` PNGs each (``corrupt``: files named .png that are not images)."""
  for cls, n in sizes.items():
    for i in range(n):
      path = root / cls / f'{i}.png'
      if corrupt:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'not a png')
      else:
        _photo(path, seed=i)
  return root


def test_first_preparation_logs_no_tfds_variant_folder_warning(tmp_path, caplog):
  """tfds logs 'Variant folder .../1.0.0 has no dataset_info.json' when asked whether a copy not made yet is
  prepared: a cryptic line before the first preparation (and before any data error). It is dropped; tfds' and
  jaxssl's other warnings (a skipped image) are not, and the filter does not outlive the call."""
  root = _classes(tmp_path / 'pets', {'cat': 3, 'dog': 3})
  (root / 'dog' / 'broken.png').write_bytes(b'not a png')
  absl_filters = list(logging.getLogger('absl').filters)
  with caplog.at_level(logging.INFO):
    image_folder.builder(data_cfg(root, tmp_path / 'tfds'))
  assert 'dataset_info.json' not in caplog.text
  assert 'skipped 1 of' in caplog.text and 'broken.png' in caplog.text   # other warnings still come through
  assert logging.getLogger('absl').filters == absl_filters
  logging.getLogger('absl').warning('Variant folder %s has no %s', tmp_path / 'other', 'dataset_info.json')
  assert 'dataset_info.json' in caplog.text              # outside the check, tfds' line would be logged


def test_a_folder_of_unreadable_images_is_one_line_and_leaves_no_copy(tmp_path):
  root = _classes(tmp_path / 'broken', {'cat': 3, 'dog': 3}, corrupt=True)
  with pytest.raises(image_folder.ImageFolderError) as e:
    image_folder.builder(data_cfg(root, tmp_path / 'tfds'))
  message = str(e.value)
  assert '\n' not in message and isinstance(e.value, cli.one_line_errors())
  assert message.startswith(f'image folder {root.resolve()}: none of the 2 image(s) of its train split could be '
                            'read (e.g. cat/')
  assert 'UnidentifiedImageError' in message and 'replace the unreadable files with images' in message
  assert not list((tmp_path / 'tfds').glob('jaxssl_image_folder/*/*'))   # no copy, nothing half-written left


def test_one_class_folder_is_read_without_labels(tmp_path):
  """One class folder alone (DIR/photos/*.png) is images without labels: a pretext task trains on it, a task that
  needs labels stops in one line saying to add the other classes (it used to train a one-class classifier to a
  loss of 0 and top-1 of 1.0)."""
  root = _classes(tmp_path / 'one', {'photos': 12})
  plan = image_folder.scan(root)
  # pylint: disable-next=use-implicit-booleaness-not-comparison  # == (): exactly no class names
  assert plan.class_names == () and not plan.labelled and plan.single_class == 'photos'
  assert any('one class folder only (photos/)' in note for note in plan.notes)
  assert all(y == -1 for split in plan.splits.values() for _, y in split)
  # Its val and test are the files they were when such a folder was read as one labelled class.
  labelled = image_folder.hold_out([(p, 0) for split in plan.splits.values() for p, _ in split], 0.1, 0.1, ('photos',))
  assert {s: sorted(p for p, _ in plan.splits[s]) for s in ('val', 'test')} == \
      {s: sorted(p for p, _ in labelled[s]) for s in ('val', 'test')}
  # So are split folders of one class.
  given = _classes(tmp_path / 'given', {'train/photos': 6, 'val/photos': 2})
  assert image_folder.scan(given).single_class == 'photos' and not image_folder.scan(given).labelled
  cfg = data_cfg(root, tmp_path / 'tfds')
  info = datasets.get_dataset('image_folder', cfg)
  assert info.num_classes == 0 and info.no_labels.startswith(
      f'image folder {root.resolve()} has one class folder only (photos/), so its images have no labels')
  assert all('label' not in r for r in read_records(datasets.load_split(info, 'train', cfg), range(4)))
  config = _run_config(fmnist_supervised.get_config(), root, tmp_path)
  check_config(config)
  with pytest.raises(experiment.DatasetMismatchError) as e:
    experiment.build_experiment(config)
  assert '\n' not in str(e.value) and isinstance(e.value, cli.one_line_errors())
  assert 'has one class folder only (photos/)' in str(e.value) and 'add a folder of each other class' in str(e.value)
  assert "task 'classify'" in str(e.value)
  config = _run_config(fmnist_rotation.get_config(), root, tmp_path)   # the pretext task needs no labels
  config.online_probe.enabled = False
  tasks, _ = build_tasks(config.tasks, info, config.online_probe)     # (the flat folder's test trains its model)
  assert [t.name for t in tasks] == ['rotation']


def test_a_split_too_small_to_hold_out_says_why_and_what_to_do(tmp_path):
  root = _classes(tmp_path / 'tiny', {'cat': 2, 'dog': 2})
  cfg = data_cfg(root, tmp_path / 'tfds')
  info = datasets.get_dataset('image_folder', cfg)
  assert info.splits == ('train',)
  for split in ('val', 'test'):
    with pytest.raises(datasets.MissingSplitError) as e:
      datasets.load_split(info, split, cfg)
    message = str(e.value)
    assert '\n' not in message and isinstance(e.value, cli.one_line_errors())
    assert message.startswith(f"dataset 'image_folder' has no split '{split}': {root.resolve()} has no {split}/ "
                              f'folder with images, and holding {split}_fraction=0.1 of each class out of train '
                              'took no image: its 2 classes have 2 image(s) each')
    assert message.endswith(f'add images, add a {split}/ folder, or set --config.data.eval_split to a split it '
                            'has (train)')
  # A fraction of 0 is the other cause; an unlabelled folder has no classes to count.
  big = _classes(tmp_path / 'big', {'cat': 5, 'dog': 5})
  assert image_folder.scan(big, val_fraction=0.0).missing['val'].endswith(
      'and --config.data.val_fraction=0 holds none of train out: set it above 0 (e.g. 0.1), add a val/ folder, or '
      'set --config.data.eval_split to a split it has (train, test)')
  flat = tmp_path / 'flat'
  for i in range(2):
    _photo(flat / f'{i}.png', seed=i)
  assert 'of its images out of train took none: it has too few' in image_folder.scan(flat).missing['test']
