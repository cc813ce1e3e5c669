"""Torchvision-format weights in jaxssl's AlexNet (arch='torchvision'), ResNet-18 and ResNet-50: the same logits as
the torch networks on real photos, every mismatch named in one error, and a run that starts from the file; and
data.normalize=imagenet.

The torch networks are in tests/torchvision_nets.py, with torchvision's module names (torchvision's PyPI wheel is
built against CUDA torch and does not import beside the CPU torch of the `torch` extra); where torchvision does
import, a test checks that their state dicts have torchvision's names and shapes. Without torch (or safetensors)
the tests that need them skip; the others run.
"""

import dataclasses
import hashlib
import json
import pathlib
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from conftest import REPO
from configs import deepfashion_rotation
from jaxssl.data import datasets, normalization
from jaxssl.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from jaxssl.models import build_backbone, feature_shapes
from jaxssl.models import torchvision_weights as tvw
from jaxssl.train import transfer

@pytest.fixture(name='nets', scope='module')
def fixture_nets():
  """tests/torchvision_nets.py, where torch and safetensors are installed."""
  pytest.importorskip('torch')
  pytest.importorskip('safetensors.torch')
  import torchvision_nets  # pylint: disable=import-outside-toplevel
  return torchvision_nets


OPTIONS = {'alexnet': {'arch': 'torchvision', 'dropout': 0.5}, 'resnet18': {}, 'resnet50': {}}
# Input sizes: AlexNet at 127 px has a 3x3 pool5, which the adaptive pool spreads to 6x6 (as torchvision's does).
SIZES = {'alexnet': 127, 'resnet18': 112, 'resnet50': 112}


def photos(folder, size, n=4):
  """n real DeepFashion photos, resized to size x size, as ImageNet-standardized float32 [n, size, size, 3]."""
  images = []
  for path in sorted((pathlib.Path(folder) / 'img').glob('*.jpg'))[:n]:
    with Image.open(path) as im:
      images.append(np.asarray(im.convert('RGB').resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0)
  return ((np.stack(images) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def backbone(name, size, abstract=False):
  def make():
    return build_backbone(name, input_shape=(size, size, 3), rngs=nnx.Rngs(0), **OPTIONS[name])
  return nnx.eval_shape(make) if abstract else make()


# ---- Names, shapes, logits.

def test_torchvision_alexnet_shapes():
  """torchvision's AlexNet: its feature shapes at 224 px, 61,100,840 parameters less its 1000-way classifier."""
  model = backbone('alexnet', 224, abstract=True)
  assert feature_shapes(model, (224, 224, 3)) == {
      'conv1': (55, 55, 64), 'pool1': (27, 27, 64), 'conv2': (27, 27, 192), 'pool2': (13, 13, 192),
      'conv3': (13, 13, 384), 'conv4': (13, 13, 256), 'conv5': (13, 13, 256), 'pool5': (6, 6, 256),
      'fc6': (4096,), 'fc7': (4096,)}
  assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 61_100_840 - 4_097_000
  nnx.eval_shape(lambda: build_backbone('alexnet', input_shape=(63, 63, 3), rngs=nnx.Rngs(0), arch='torchvision'))
  with pytest.raises(ValueError, match=r'AlexNet\(arch=torchvision\) needs inputs of at least 63x63 pixels'):
    nnx.eval_shape(lambda: build_backbone('alexnet', input_shape=(62, 62, 3), rngs=nnx.Rngs(0), arch='torchvision'))
  with pytest.raises(ValueError, match="unknown arch 'caffe'"):
    build_backbone('alexnet', input_shape=(224, 224, 3), rngs=nnx.Rngs(0), arch='caffe')


def test_reference_networks_have_torchvision_names(nets):
  try:
    from torchvision import models  # pylint: disable=import-outside-toplevel,import-error
  except Exception as e:  # pylint: disable=broad-exception-caught  # ImportError, or a wheel built for other torch
    pytest.skip(f'torchvision does not import here ({type(e).__name__}); tests/torchvision_nets.py follows its source')
  for name, build in nets.TORCH.items():
    ours = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in getattr(models, name)().state_dict().items()}
    assert ours == theirs, name


@pytest.mark.parametrize('name', ['alexnet', 'resnet18', 'resnet50'])
def test_imported_weights_give_the_torch_logits_on_real_photos(name, nets, deepfashion_sample, tmp_path):
  """Eval mode, float32: measured max |difference| / max |logit| 6e-7 (AlexNet), 2e-6 (ResNet-18), 1.1e-5
  (ResNet-50), against a tolerance of 1e-4."""
  size = SIZES[name]
  images = photos(deepfashion_sample, size)
  model = nets.random_torch(name, images)
  arrays = nets.save(model, tmp_path / 'w.safetensors')
  want = nets.logits(model, images)

  net = backbone(name, size, abstract=True)  # no random init to spend time on: every array comes from the file
  info, head = tvw.load_weights(net, str(tmp_path / 'w.safetensors'))
  features = nnx.jit(lambda m, x: m(x, train=False)[m.output_name])(net, images)
  got = np.asarray(tvw.imagenet_logits(features, head))
  assert got.shape == want.shape == (4, 1000) and np.abs(want).max() > 1
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  assert (got.argmax(1) == want.argmax(1)).all()

  skipped = 2 + (sum(k.endswith('num_batches_tracked') for k in arrays))  # the classifier, the BN counters
  assert info['arrays'] == len(arrays) - skipped and info['skipped'] == skipped and info['format'] == 'torchvision'
  assert info['classifier'] == [features.shape[1], 1000]
  if name == 'resnet50':
    # A residual branch's last BatchNorm starts at scale 0 in jaxssl; the file's scale replaces it.
    np.testing.assert_array_equal(net.stages[3][2].bn3.scale[...], arrays['layer4.2.bn3.weight'])
    np.testing.assert_array_equal(net.stages[1][0].shortcut.bn.var[...], arrays['layer2.0.downsample.1.running_var'])
  if name == 'resnet18':
    # A .pth file loads the same arrays (torch is here); its digest is its own.
    nets.save(model, tmp_path / 'w.pth')
    again = backbone(name, size, abstract=True)
    info_pth, _ = tvw.load_weights(again, str(tmp_path / 'w.pth'))
    jax.tree.map(np.testing.assert_array_equal, nnx.state(again), nnx.state(net))
    assert info_pth['sha256'] != info['sha256'] and info_pth['arrays'] == info['arrays']


# ---- Mismatches.

def test_every_mismatch_is_named_in_one_error(nets, tmp_path):
  state = {k: v.numpy() for k, v in nets.TORCH['resnet18']().state_dict().items()}
  with pytest.raises(tvw.WeightsError) as err:
    tvw.convert(backbone('resnet50', 64, abstract=True), state, 'r18.safetensors')
  msg = str(err.value)
  assert msg.startswith('r18.safetensors does not fit the ResNet built from this config')
  # ResNet-50 has bn3/conv3 and 16 blocks; ResNet-18's 3x3 conv1s are 1x1 there; the file looks like ResNet-18.
  assert 'missing in the file (' in msg and 'layer1.0.conv3.weight' in msg and '...' in msg
  assert 'not in the model' not in msg  # ResNet-18's names are all ResNet-50's
  assert 'of another shape (' in msg and 'layer1.0.conv1.weight (64, 64, 3, 3) (want (64, 64, 1, 1))' in msg
  assert 'looks like ResNet-18' in msg and '\n' not in msg

  del state['layer2.0.downsample.1.running_var']
  state['layer5.0.conv1.weight'] = np.zeros((1,), np.float32)
  with pytest.raises(tvw.WeightsError) as err:
    tvw.convert(backbone('resnet18', 64, abstract=True), state)
  msg = str(err.value)
  assert 'missing in the file (1): layer2.0.downsample.1.running_var' in msg
  assert 'not in the model (1): layer5.0.conv1.weight' in msg and 'of another shape' not in msg

  with pytest.raises(tvw.WeightsError, match="arch=torchvision with norm=none .this model has arch=paper"):
    tvw.convert(nnx.eval_shape(lambda: build_backbone('alexnet', input_shape=(67, 67, 3), rngs=nnx.Rngs(0))), state)
  grey = nnx.eval_shape(lambda: build_backbone('resnet18', input_shape=(64, 64, 1), rngs=nnx.Rngs(0)))
  with pytest.raises(tvw.WeightsError, match='take 3-channel images, this dataset has 1-channel ones'):
    tvw.convert(grey, {k: v for k, v in state.items() if not k.startswith('layer5')} | {
        'layer2.0.downsample.1.running_var': np.ones(128, np.float32)})
  with pytest.raises(tvw.WeightsError, match='ImageNet stem'):
    tvw.convert(nnx.eval_shape(lambda: build_backbone('resnet18_cifar', input_shape=(32, 32, 3),
                                                      rngs=nnx.Rngs(0))), state)

  # Through init_from: a TransferError (one line in the CLI), checked before the file is read where it can be.
  path = tmp_path / 'r18.safetensors'
  nets.save(nets.TORCH['resnet18'](), path)
  model = types.SimpleNamespace(backbone=backbone('resnet50', 64, abstract=True))  # what load_init reads of one
  with pytest.raises(transfer.TransferError, match='layer1.0.conv3.weight'):
    transfer.load_init(model, str(path))
  with pytest.raises(transfer.TransferError, match='init_step=-1'):
    transfer.load_init(model, str(path), init_step=3)
  with pytest.raises(transfer.TransferError, match='no such weights file'):
    transfer.load_init(model, str(tmp_path / 'nothing.safetensors'))
  (tmp_path / 'cut.safetensors').write_bytes(path.read_bytes()[:1000])
  with pytest.raises(transfer.TransferError, match='cannot read .*cut.safetensors as safetensors'):
    transfer.load_init(model, str(tmp_path / 'cut.safetensors'))
  (tmp_path / 'junk.pth').write_bytes(bytes(range(256)))   # no pickle: torch's reason, not its weights_only advice
  with pytest.raises(transfer.TransferError, match=r'cannot read .*junk.pth as a PyTorch state dict \(Unpickling') as e:
    transfer.load_init(model, str(tmp_path / 'junk.pth'))
  assert 'weights_only' not in str(e.value) and '\n' not in str(e.value)
  with pytest.raises(ValueError, match="fit the models resnet18, resnet50, alexnet, not 'cifarnet'"):
    tvw.check_weights_config(str(path), -1, 'cifarnet', {})
  with pytest.raises(ValueError, match='options.arch=torchvision .this config has arch=paper'):
    tvw.check_weights_config(str(path), -1, 'alexnet', {'norm': 'none'})
  tvw.check_weights_config(str(path), -1, 'alexnet', {'arch': 'torchvision'})


def test_cli_reports_a_file_the_model_cannot_take_in_one_line(nets, tmp_path):
  """Checked with the config, before any data is read or model built."""
  path = tmp_path / 'r18.safetensors'
  nets.save(nets.TORCH['resnet18'](), path)
  out = subprocess.run([sys.executable, '-m', 'jaxssl.main', '--config', str(REPO / 'configs/fmnist_supervised.py'),
                        '--workdir', str(tmp_path / 'run'), f'--config.init_from={path}'],
                       cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert out.stderr.strip() == (f'error: bad config: init_from={path} holds torchvision weights, which fit the '
                                "models resnet18, resnet50, alexnet, not 'cifarnet': set --config.model.name")
  assert not (tmp_path / 'run').exists()


def test_imagenet_normalization_replaces_the_dataset_statistics():
  rgb = datasets.DatasetInfo('photos', (8, 8, 3), ('a', 'b'), (0.6, 0.5, 0.4), (0.3, 0.3, 0.3), ('train',), None)
  grey = dataclasses.replace(rgb, input_shape=(8, 8, 1), mean=(0.3,), std=(0.3,))
  assert normalization.normalized(rgb, ml_collections.ConfigDict({'normalize': 'dataset'})) is rgb
  assert normalization.normalized(grey, ml_collections.ConfigDict()) is grey   # configs without the key
  imagenet = normalization.normalized(rgb, ml_collections.ConfigDict({'normalize': 'imagenet'}))
  assert (imagenet.mean, imagenet.std, imagenet.class_names) == (IMAGENET_MEAN, IMAGENET_STD, rgb.class_names)
  with pytest.raises(ValueError, match='RGB images, but photos has 1 channel'):
    normalization.normalized(dataclasses.replace(grey, name='photos'), ml_collections.ConfigDict(
        {'normalize': 'imagenet'}))
  with pytest.raises(ValueError, match="unknown normalization 'imagnet'; choose one of: dataset, imagenet"):
    normalization.check_normalize(ml_collections.ConfigDict({'normalize': 'imagnet'}))


# ---- A run from the file.

def test_a_run_starts_from_the_file(nets, deepfashion_sample, tmp_path):
  """A DeepFashion rotation run on ResNet-18 with --config.init_from=<file>.safetensors and ImageNet
  normalization: the backbone it trains (frozen for the optimizer here) is the file's, and init_from.json says
  where it came from."""
  from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
  path = tmp_path / 'r18.safetensors'
  arrays = nets.save(nets.random_torch('resnet18', photos(deepfashion_sample, 64)), path)
  c = deepfashion_rotation.get_config('sample,quick')
  c.data.source_dir, c.data.data_dir, c.data.image_size = deepfashion_sample, str(tmp_path / 'tfds'), 64
  c.data.train_limit, c.data.eval_limit, c.data.normalize = 16, 8, 'imagenet'
  c.model.name, c.model.options = 'resnet18', ml_collections.ConfigDict({'width': 1.0})
  c.init_from, c.optim.backbone_lr_scale = str(path), 0.0
  c.batch_size, c.eval_batch_size, c.total_steps, c.eval_every, c.checkpoint_every = 4, 8, 1, 0, 1
  workdir = tmp_path / 'run'
  assert loop.train_and_evaluate(c, str(workdir))['finished']

  info = json.loads((workdir / 'init_from.json').read_text(encoding='utf-8'))
  assert info['checkpoint'] == str(path) and info['format'] == 'torchvision' and info['arrays'] == 100
  assert info['sha256'] == hashlib.sha256(path.read_bytes()).hexdigest()
  saved = transfer.read_backbone(str(workdir / 'checkpoints' / '1'))  # the backbone after the step
  np.testing.assert_array_equal(saved[('stem_conv', 'kernel')], arrays['conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(saved[('stages', '3', '1', 'bn2', 'scale')], arrays['layer4.1.bn2.weight'])
