"""README claims that no other test covered, each checked where it would break: the tasks' reported metrics and
inputs (per-angle rotation accuracy, jigsaw per-tile standardization and in-order shared-weight tile features,
coordinate ``exact``/``solved``), several tasks on one backbone (the weighted sum of their losses), the DeepFashion
loss (``pos_weight='sqrt'``, non-1 loss weights), what a run leaves and shows (``keep_checkpoints``, the progress
line, Ctrl-C -> 143 with a checkpoint), transfer from ``WORKDIR/checkpoints/STEP`` or ``init_step``, and where the
data come from and go (Debian's re-gzipped Fashion-MNIST files; ``$TFDS_DATA_DIR`` else ``~/tensorflow_datasets``).

Claims about one module's behaviour are checked beside that module's other tests instead (test_pretext: per-angle
accuracy and a jigsaw that learns; test_multitask: category.csv numbering, group_argmax, the Img/img/ layout and
bounding-box crops in a run; test_bench_commands: the bench's JSON line without torch). Runs here are small (a few
steps of CifarNet on slices of the real data); the tests of a finished run share one.
"""

import contextlib
import gzip
import io
import math
import os
import re
import signal
import threading
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import checked_as_official, small_config
from configs import fmnist_rotation_jigsaw, fmnist_supervised
from jaxssl import runlog, trees
from jaxssl.data import datasets, fashion_mnist as fm, paths
from jaxssl.models import build_backbone
from jaxssl.tasks.base import metric_mean
from jaxssl.tasks.category_attributes import CategoryAttributes
from jaxssl.tasks.jigsaw import JigsawCoords, JigsawPermutation
from jaxssl.tasks.rotation import Rotation
from jaxssl.train import experiment, loop, transfer
from jaxssl.runlog import read_metrics

STATS = {'mean': (fm.MEAN,), 'std': (fm.STD,)}


@pytest.fixture(scope='module')
def fmnist_images(fmnist_source_dir):  # pylint: disable=unused-argument  # sets $JAXSSL_FASHION_MNIST_DIR
  return fm.load_arrays('test')[0]


def _means(metrics):
  return {k: float(metric_mean(v)) for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------------- tasks


def test_rotation_reports_accuracy_per_angle():
  """README, Tasks: rotation 'reports rotation/acc and per-angle accuracy'. Three images and a padding row, worked
  by hand: angle 0 right 3 times of 3, 90 twice, 180 never, 270 once (the padding row's answers do not count)."""
  predicted = np.array([[0, 1, 0, 3],     # image 0: right at 0, 90 and 270
                        [0, 0, 0, 1],     # image 1: right at 0
                        [0, 1, 0, 2],     # image 2: right at 0 and 90
                        [0, 1, 2, 3]])    # padding: right everywhere, weight 0
  logits = jax.nn.one_hot(predicted, 4) * 5.0
  batch = {'label': np.tile(np.arange(4, dtype=np.int32), (4, 1)),
           'weight': np.repeat(np.array([1, 1, 1, 0], np.float32)[:, None], 4, axis=1)}
  _, metrics = Rotation(**STATS).loss(logits, batch)
  metrics = _means(metrics)
  assert metrics['acc_0'] == pytest.approx(1.0) and metrics['acc_90'] == pytest.approx(2 / 3)
  assert metrics['acc_180'] == pytest.approx(0.0) and metrics['acc_270'] == pytest.approx(1 / 3)
  assert metrics['acc'] == pytest.approx(6 / 12)
  _, two = Rotation(**STATS, angles=(0, 180)).loss(logits[:, :2], {k: v[:, :2] for k, v in batch.items()})
  assert set(two) == {'loss', 'acc', 'acc_0', 'acc_180'}   # one figure per configured angle


def _tiles_seen(task, batch):
  """What the backbone receives for ``batch``, as one [t, t, C] array per tile: [B * T, t, t, C]."""
  captured = []

  def backbone(x, *, train, rng):  # pylint: disable=unused-argument
    captured.append(x)
    return {}

  task.forward(backbone, lambda _: jnp.zeros((len(captured[-1]), 2 * task.grid ** 2)), batch, train=False, rng=None)
  seen = np.asarray(captured[-1])
  if isinstance(task, JigsawPermutation):
    return seen
  b, side, _, c = seen.shape
  g = task.grid
  t = side // g
  return seen.reshape(b, g, t, g, t, c).transpose(0, 1, 3, 2, 4, 5).reshape(b * g * g, t, t, c)


@pytest.mark.parametrize('kind', [JigsawPermutation, JigsawCoords])
def test_jigsaw_tiles_are_standardized_each_by_itself(fmnist_images, kind):
  """README, Tasks: jigsaw tiles are 'optionally standardized per tile' (tile_norm, on by default): every tile the
  backbone sees has mean 0 and unit spread, and a tile made brighter by any constant of its own is seen exactly as
  before, so absolute brightness cannot place a tile. Without tile_norm the same change shows."""
  images = fmnist_images[:16] // 2      # room to brighten without clipping
  task = kind(**STATS, grid=2)
  batch = task.transform({'image': images, 'weight': np.ones(16, np.float32)}, np.random.default_rng(0), train=True)
  seen = _tiles_seen(task, batch)
  np.testing.assert_allclose(seen.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
  key = 'tiles' if kind is JigsawPermutation else 'image'
  raw = _tiles_seen(kind(**STATS, grid=2, tile_norm=False), batch) * fm.STD + fm.MEAN   # the tiles on [0, 1]
  content = raw.var(axis=(1, 2, 3)) > 0.02
  assert content.sum() > 8
  np.testing.assert_allclose(seen.std(axis=(1, 2, 3))[content], 1.0, atol=0.05)
  # A different brightness for every tile of every puzzle.
  shift = np.random.default_rng(1).integers(30, 128, size=(16, 4)).astype(np.uint8)
  if kind is JigsawPermutation:
    bright = batch['tiles'] + shift[:, :, None, None, None]
  else:
    t = batch['image'].shape[1] // 2
    bright = batch['image'] + np.repeat(np.repeat(shift.reshape(16, 2, 2), t, axis=1), t, axis=2)[..., None]
  brightened = {**batch, key: bright}
  np.testing.assert_allclose(_tiles_seen(task, brightened), seen, atol=1e-4)
  plain = kind(**STATS, grid=2, tile_norm=False)
  assert np.abs(_tiles_seen(plain, brightened) - _tiles_seen(plain, batch)).min() > 0.1


def test_jigsaw_encodes_each_tile_alone_and_reads_the_features_in_order(fmnist_images):
  """README, Tasks: 'the backbone encodes every tile with shared weights, the tile features are concatenated in order
  and an MLP classifies the permutation'. Computed by hand: one backbone applied to each tile by itself (a batch of
  one), its features laid side by side position by position, through the head's two layers; swapping two tiles of
  a puzzle changes the answer, as the order is the signal."""
  task = JigsawPermutation(**STATS, grid=2, tile_norm=False, hidden_size=16)
  batch = task.transform({'image': fmnist_images[:3], 'weight': np.ones(3, np.float32)}, np.random.default_rng(0),
                         train=True)
  swapped = batch['tiles'].copy()
  swapped[:, [0, 1]] = swapped[:, [1, 0]]

  @nnx.jit
  def outputs(model, tiles):
    backbone, head = model['backbone'], model['head']
    got = task.forward(backbone, head, {'tiles': tiles}, train=False, rng=None)
    x = (tiles.astype(jnp.float32) / 255.0 - fm.MEAN) / fm.STD
    by_hand = []
    for puzzle in x:
      features = [backbone(tile[None])[head.feature].reshape(-1) for tile in puzzle]   # each tile alone
      h = jax.nn.relu(head.hidden(jnp.concatenate(features)[None]))                   # in puzzle order
      by_hand.append(head.out(h)[0])
    return got, jnp.stack(by_hand)

  def build():
    backbone = build_backbone('cifarnet', input_shape=(12, 12, 1), rngs=nnx.Rngs(0))
    head = task.make_head(backbone, (28, 28, 1), nnx.Rngs(1))
    head.out.kernel[...] = jax.random.normal(jax.random.key(2), head.out.kernel[...].shape)  # (zero at init)
    return nnx.Dict({'backbone': backbone, 'head': head})

  model = nnx.jit(build)()
  got, by_hand = outputs(model, batch['tiles'])
  assert got.shape == (3, 24)
  np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-5)
  got_swapped, by_hand_swapped = outputs(model, swapped)
  np.testing.assert_allclose(got_swapped, by_hand_swapped, rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(got_swapped) - np.asarray(got)).max() > 1e-3


def test_jigsaw_coords_reports_exact_and_solved():
  """README, Tasks: jigsaw_coords' 'exact = fraction of tiles placed exactly right, solved = fraction of puzzles
  solved' (predictions are grid units over grid - 1, rounded). Worked by hand on 2x2 puzzles."""
  coords = np.array([[[0, 0], [0, 1], [1, 0], [1, 1]],
                     [[1, 1], [1, 0], [0, 1], [0, 0]],
                     [[0, 1], [0, 0], [1, 1], [1, 0]],
                     [[0, 0], [0, 1], [1, 0], [1, 1]]], np.int32)
  pred = coords.astype(np.float32) + np.float32(0.3) * np.array([1, -1], np.float32)   # within rounding: right
  pred[1, 2, 1] = 0.4                  # puzzle 1: one tile off in its column (1) -> 3 of 4 right, not solved
  pred[2, :, 0] = 1 - coords[2, :, 0]  # puzzle 2: every row wrong -> 0 of 4
  pred[3] = 0.5 + 0.4 * (1 - 2 * coords[3])   # padding (weight 0): all wrong, does not count
  weight = np.array([1, 1, 1, 0], np.float32)
  loss, metrics = JigsawCoords(**STATS, grid=2).loss(jnp.asarray(pred), {'coords': coords, 'weight': weight})
  metrics = _means(metrics)
  assert metrics['exact'] == pytest.approx((1 + 0.75 + 0) / 3)
  assert metrics['solved'] == pytest.approx(1 / 3)
  per_puzzle = ((pred - coords) ** 2).mean(axis=(1, 2))
  assert float(loss) == pytest.approx(per_puzzle[:3].mean(), rel=1e-5)


def test_deepfashion_loss_weights_and_sqrt_positive_weights():
  """README, Tasks: category_attributes' 'loss = category_weight x cross-entropy + attribute_weight x the mean binary
  cross-entropy over attributes, optionally weighting positives by ... its square root (pos_weight sqrt, capped at
  pos_weight_max)'. Frequencies 0.2 and 0.01 give sqrt((1 - f) / f) = 2 and 9.95, capped at 5; worked by hand."""
  task = CategoryAttributes(num_classes=3, num_attributes=2, mean=(0.5,) * 3, std=(0.25,) * 3,
                            attribute_frequency=(0.2, 0.01), pos_weight='sqrt', pos_weight_max=5.0,
                            category_weight=2.0, attribute_weight=0.5)
  np.testing.assert_allclose(task.positive_weights(), [2.0, 5.0], rtol=1e-6)
  outputs = {'category': jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
             'attributes': jnp.array([[0.0, 1.0], [2.0, -1.0]])}
  batch = {'category': np.array([0, 2]), 'category_weight': np.ones(2, np.float32),
           'attributes': np.array([[1, 0], [1, 1]], np.uint8), 'attribute_weight': np.ones(2, np.float32)}
  loss, metrics = task.loss(outputs, batch)

  def softplus(z):          # -log sigmoid(-z)
    return math.log1p(math.exp(z))

  # Image 0: positive at logit 0 (x2), negative at logit 1. Image 1: positives at 2 (x2) and -1 (x5).
  bce = [(2 * softplus(-0.0) + softplus(1.0)) / 2, (2 * softplus(-2.0) + 5 * softplus(1.0)) / 2]
  ce = [math.log(1 + 2 / math.e), math.log(3)]
  metrics = _means(metrics)
  assert metrics['attribute_loss'] == pytest.approx(np.mean(bce), rel=1e-5)
  assert metrics['category_loss'] == pytest.approx(np.mean(ce), rel=1e-5)
  assert float(loss) == pytest.approx(2.0 * np.mean(ce) + 0.5 * np.mean(bce), rel=1e-5)


def test_several_tasks_train_on_the_weighted_sum_of_their_losses(tfds_dir, tmp_path):
  """README, Tasks: 'Several tasks train together on one backbone with their losses summed by weight
  (configs/fmnist_rotation_jigsaw.py)'. That config's tasks and weights (rotation x 1, jigsaw x 0.5) in a short run,
  the jigsaw as coordinates on 2x2 whole 14 px cells, so that both tasks feed CifarNet 28 x 28 (the config's own
  ResNet-20 takes half a minute to build and compile on a 2-core CPU). At every logged step and in the evaluation
  the run's loss is the weighted sum of the two tasks' losses."""
  config = fmnist_rotation_jigsaw.get_config('quick')
  assert (config.tasks.rotation.weight, config.tasks.jigsaw.weight) == (1.0, 0.5)
  config.tasks.jigsaw = ml_collections.ConfigDict({'kind': 'jigsaw_coords', 'weight': 0.5, 'grid': 2,
                                                   'tile_size': 14, 'gap': 0})
  config.model.name, config.model.options = 'cifarnet', ml_collections.ConfigDict()
  config.data.data_dir = tfds_dir
  config.data.train_limit, config.data.eval_limit = 256, 32
  config.update({'total_steps': 3, 'eval_every': 0, 'checkpoint_every': 3, 'log_every': 1, 'batch_size': 16,
                 'eval_batch_size': 32})
  summary = loop.train_and_evaluate(config, str(tmp_path))
  train = [r for r in read_metrics(str(tmp_path)) if r['split'] == 'train']
  assert summary['finished'] and [r['step'] for r in train] == [1, 2, 3]
  for row in [*train, summary['eval']]:
    assert row['rotation/loss'] > 0.05 and row['jigsaw/loss'] > 0.05
    assert row['loss'] == pytest.approx(row['rotation/loss'] + 0.5 * row['jigsaw/loss'], rel=1e-5)


# --------------------------------------------------------------------------------------- a run's behaviour

_PROGRESS = re.compile(r'^step (\d+)/(\d+) \((\d+)%\) (.*) \| (\d+) img/s \| ETA (\S+)$')


@pytest.fixture(scope='module')
def short_run(tfds_dir, tmp_path_factory):
  """Six steps of CifarNet, a checkpoint every two, keeping two; its stdout and workdir."""
  workdir = str(tmp_path_factory.mktemp('short_run'))
  config = small_config(tfds_dir, total_steps=6, checkpoint_every=2, keep_checkpoints=2, eval_every=0,
                        log_every=1, **{'data.train_limit': 1024, 'data.eval_limit': 128})
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    summary = loop.train_and_evaluate(config, workdir)
  assert summary['finished']
  return workdir, out.getvalue()


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def test_only_the_last_keep_checkpoints_are_kept(short_run):
  """README: the workdir gets 'checkpoints/ (orbax, the last keep_checkpoints)': saves at 2, 4, 6, keeping 2."""
  workdir, _ = short_run
  assert _steps(workdir) == [4, 6]


def test_progress_line_shows_step_loss_rate_and_eta(short_run):
  """README: 'Progress goes to stdout: step 700/2340 (30%) classify/top1=0.89 loss=0.31 lr=0.046 | 380 img/s |
  ETA 4m18s' -- one line per logged step, its loss and rate those of the step's metrics.jsonl row."""
  workdir, out = short_run
  lines = [m for m in map(_PROGRESS.match, out.splitlines()) if m]
  rows = {r['step']: r for r in read_metrics(workdir) if r['split'] == 'train'}
  assert [int(m[1]) for m in lines] == list(range(1, 7)) == sorted(rows)
  for m in lines:
    step, row = int(m[1]), rows[int(m[1])]
    assert int(m[2]) == 6 and int(m[3]) == round(100 * step / 6)
    shown = dict(kv.split('=') for kv in m[4].split())
    assert list(shown) == ['classify/top1', 'loss', 'lr']
    assert shown['loss'] == f"{row['loss']:.4g}" and shown['classify/top1'] == f"{row['classify/top1']:.4g}"
    assert m[5] == f"{row['images_per_s']:.0f}"
    if step == 1:    # the compiling step: no rate yet
      assert m[5] == '0' and m[6] == '?'
    else:
      assert int(m[5]) > 0 and re.fullmatch(r'\d+m\d\ds', m[6])
  assert lines[-1][6] == '0m00s'


def test_progress_line_format(monkeypatch):
  """The README's example line, with the clock set: 699 steps of 64 images in 699 x 64 / 380 s since the first."""
  clock = [100.0]
  monkeypatch.setattr(runlog, 'time', types.SimpleNamespace(perf_counter=lambda: clock[0]))
  progress = runlog.Progress(2340, 64, 0)
  progress.start(1)
  clock[0] += 699 * 64 / 380
  metrics = {'classify/top1': 0.89, 'classify/top5': 0.99, 'grad_norm': 1.5, 'loss': 0.31, 'lr': 0.046}
  line, rate = progress.line(700, metrics)
  assert rate == pytest.approx(380)
  assert line == 'step 700/2340 (30%) classify/top1=0.89 loss=0.31 lr=0.046 | 380 img/s | ETA 4m36s'  # 1640 x 64 / 380
  clock[0] += 10.0    # one step in 10 s: 6.4 img/s, 1639 x 64 / 6.4 s to go
  assert progress.line(701, {'loss': 0.3})[0] == 'step 701/2340 (30%) loss=0.3 | 6 img/s | ETA 4h33m'
  assert progress.line(701, {'loss': 0.3})[0] == 'step 701/2340 (30%) loss=0.3 | 0 img/s | ETA ?'   # no step since
  assert runlog.Progress(10, 64, 0).line(1, {'loss': 2.0})[0] == 'step 1/10 (10%) loss=2 | 0 img/s | ETA ?'


def test_init_from_a_checkpoint_folder_or_init_step(short_run, tfds_dir):
  """README, Transfer: '--config.init_from=WORKDIR (or WORKDIR/checkpoints/STEP, or --config.init_step) copies the
  backbone of any run's orbax checkpoint'. The step-4 folder and init_step=4 load the same, step 4's, weights (not
  the latest's); the checkpoints/ folder or the workdir alone load the latest."""
  workdir, _ = short_run
  ckpts = os.path.join(workdir, 'checkpoints')
  assert transfer.resolve_checkpoint(workdir) == transfer.resolve_checkpoint(ckpts) == os.path.join(ckpts, '6')
  assert transfer.resolve_checkpoint(workdir, 4) == transfer.resolve_checkpoint(os.path.join(ckpts, '4'))
  with pytest.raises(transfer.TransferError, match='checkpoint of step 4, but init_step=6'):
    transfer.resolve_checkpoint(os.path.join(ckpts, '4'), 6)
  with pytest.raises(FileNotFoundError, match=re.escape('no checkpoint at step 2') + '.*' +
                     re.escape('available steps: [4, 6]')):
    transfer.resolve_checkpoint(workdir, 2)   # saved, then dropped by keep_checkpoints=2
  with pytest.raises(FileNotFoundError, match=re.escape(f'no such checkpoint; {ckpts} holds the steps [4, 6]')):
    transfer.resolve_checkpoint(os.path.join(ckpts, '99'))

  step4, step6 = (transfer.read_backbone(os.path.join(ckpts, s)) for s in ('4', '6'))
  loaded = {}
  for name, overrides in (('folder', {'init_from': os.path.join(ckpts, '4')}),
                          ('init_step', {'init_from': workdir, 'init_step': 4})):
    exp = experiment.build_experiment(small_config(tfds_dir, seed=7, **overrides))
    assert exp.init_info['checkpoint'] == os.path.join(ckpts, '4'), name
    loaded[name] = trees.flat_paths(jax.device_get(exp.state.params['backbone']))
  assert loaded['folder'].keys() == loaded['init_step'].keys() and loaded['folder']
  for path, value in loaded['folder'].items():
    np.testing.assert_array_equal(value, loaded['init_step'][path])
    np.testing.assert_array_equal(value, step4[path])
    assert not np.array_equal(value, step6[path]), path


def test_ctrl_c_saves_a_checkpoint_and_exits_143(tfds_dir, tmp_path):
  """README: 'SIGTERM or Ctrl-C saves a checkpoint and exits with code 143'. SIGINT (what Ctrl-C sends) reaches the
  training loop once it has logged a step; the run stops after that step, saves it and returns 143 (what
  jaxssl.main exits with), and gives the process its own SIGINT handler back. The run is far longer than the test,
  so the signal always lands mid-run, however loaded the machine."""
  config = small_config(tfds_dir, total_steps=100_000, checkpoint_every=100_000, eval_every=0, log_every=1,
                        **{'data.eval_limit': 128})
  workdir = str(tmp_path / 'run')
  metrics = os.path.join(workdir, 'metrics.jsonl')
  before = signal.getsignal(signal.SIGINT)
  sent = threading.Event()

  def interrupt():
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
      handler = signal.getsignal(signal.SIGINT)
      if handler is not before and os.path.exists(metrics) and os.path.getsize(metrics):   # the loop's own handler
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()
        return
      time.sleep(0.02)

  thread = threading.Thread(target=interrupt, daemon=True)
  thread.start()
  summary = loop.train_and_evaluate(config, workdir, stop_after=1000)   # a bound, should the signal be lost
  thread.join(timeout=10)
  assert sent.is_set()
  assert summary['exit_code'] == loop.PREEMPTED_EXIT_CODE == 143 and not summary['finished']
  assert 1 <= summary['step'] < 1000
  assert _steps(workdir) == [summary['step']]
  assert signal.getsignal(signal.SIGINT) is before
  assert not os.path.exists(os.path.join(workdir, 'final_metrics.json'))


# ------------------------------------------------------------------------------------------------------ data


def test_debian_regzipped_files_are_accepted_and_preferred_over_the_download(generated_fmnist, monkeypatch,
                                                                             tmp_path):
  """README, Data: Fashion-MNIST's files are taken from the config or $JAXSSL_FASHION_MNIST_DIR, then Debian's
  /usr/share/datasets/fashion-mnist, then the download; 'Debian's copies have other gzip headers but the same
  content'. Copies re-compressed with another name, time stamp and level are accepted (checked by their content),
  used, and nothing is downloaded."""
  debian = tmp_path / 'debian'
  debian.mkdir()
  for gz in generated_fmnist.folder.glob('*.gz'):
    data = gzip.decompress(gz.read_bytes())
    with open(debian / gz.name, 'wb') as raw, gzip.GzipFile(gz.stem, 'wb', compresslevel=1, fileobj=raw,
                                                            mtime=1_700_000_000) as f:
      f.write(data)
    assert (debian / gz.name).read_bytes() != gz.read_bytes()
  monkeypatch.delenv(fm.ENV_VAR, raising=False)
  monkeypatch.setattr(fm, 'DEBIAN_DIR', debian)

  def no_download(url, dest):
    raise AssertionError(f'downloaded {url} into {dest} although Debian has the files')

  monkeypatch.setattr(fm, '_download', no_download)
  with checked_as_official(generated_fmnist):
    assert fm.find_source_dir(download_dir=str(tmp_path / 'dl')) == debian
    source = fm.data_source('test', data_dir=str(tmp_path / 'tfds'))
    images, labels = generated_fmnist.arrays['test']
    for i in (0, 1, len(images) - 1):
      np.testing.assert_array_equal(source[i]['image'][..., 0], images[i])
      assert source[i]['label'] == labels[i]
  assert not (tmp_path / 'dl').exists()


def test_prepared_data_go_to_tfds_data_dir_else_the_home_folder(generated_fmnist, monkeypatch, tmp_path):
  """README, Data: 'Prepared data live under --config.data.data_dir (default $TFDS_DATA_DIR or
  ~/tensorflow_datasets)'. With HOME pointed at a temporary folder, a run's data config without data_dir prepares
  Fashion-MNIST there; $TFDS_DATA_DIR moves it; data_dir wins over both."""
  home = tmp_path / 'home'
  home.mkdir()
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)
  data = fmnist_supervised.get_config().data
  data.source_dir, data.data_dir = str(generated_fmnist.folder), ''
  assert paths.tfds_data_dir(data) == str(home / 'tensorflow_datasets')
  with checked_as_official(generated_fmnist):
    info = datasets.get_dataset('fashion_mnist', data)
    assert len(datasets.load_split(info, 'test', data)) == generated_fmnist.splits['test']
  assert (home / 'tensorflow_datasets' / fm.FashionMnist.name).is_dir()
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'env'))
  assert paths.tfds_data_dir(data) == str(tmp_path / 'env')
  data.data_dir = str(tmp_path / 'config')
  assert paths.tfds_data_dir(data) == str(tmp_path / 'config')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['home']   # nothing written anywhere else
