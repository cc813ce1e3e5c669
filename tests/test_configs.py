"""Every config with every documented argument passes the config check and builds its model (abstractly: no data
prepared, no FLOPs), and configs/common.py's argument grammar parses and rejects as documented."""

import importlib
import pathlib
import re
import types

import jax
import pytest
from flax import nnx

from configs import common
from jaxssl.config_check import check_config
from jaxssl.models import build_backbone
from jaxssl.tasks import build_tasks

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'
# Imported by configs, not experiments themselves.
LIBRARIES = ('__init__', 'common', 'deepfashion_common', 'folder_common')

_DEEPFASHION = ('', 'sample', 'csv', 'quick', 'sample,quick', 'benchmark,quick', 'csv,quick',
                'variant=sample,quick=true')
ARGS = {
    'fmnist_supervised': ('', 'quick'),
    'fmnist_rotation': ('', 'quick'),
    'fmnist_rotation_jigsaw': ('', 'quick'),
    'fmnist_jigsaw': ('', 'quick', '2x2_perm', '3x3_perm', '2x2_coords', '3x3_coords', '2x2_perm,quick',
                      '3x3_perm,quick', '2x2_coords,quick', '3x3_coords,quick', 'variant=2x2_coords,quick=true'),
    'fmnist_resnet': ('', 'resnet20', 'resnet18_cifar', 'resnet18', 'resnet50', 'model=resnet18'),
    'fmnist_linear': ('', 'fc1', 'conv2', 'pool2', 'pool2,avg', 'conv2,avg', 'layer=conv1,pool=avg', 'pool1,flatten',
                      'fc2'),
    'fmnist_knn': ('', 'conv2', 'fc1', 'layer=pool2', 'conv1', 'fc2'),
    'fmnist_finetune': ('', 'all', 'last:1', 'last:3', 'trainable=last:2'),
    'fmnist_label_efficiency': ('', 'all', 'last:1'),
    'fmnist_benchmark': ('', 'quick', 'resnet18_cifar', 'quick,resnet18_cifar', 'model=cifarnet', 'quick,bfloat16'),
    'deepfashion_multitask': _DEEPFASHION + ('imagenet', 'sample,imagenet,quick'),
    'deepfashion_rotation': _DEEPFASHION,
    'deepfashion_jigsaw': _DEEPFASHION,
    'fmnist_autoencoder': ('', 'quick', 'gaussian', 'masking', 'salt_pepper', 'gaussian,quick', 'bce', 'fc1',
                           'noise=masking,level=0.5,loss=bce,layer=conv2', 'none,mse', 'salt_pepper,level=0.2,pool1'),
    'fmnist_inpainting': ('', 'quick', 'blocks', 'center,zero', 'blocks,noise,quick', 'size=0.3', 'conv2',
                          'center,mean,size=0.4,layer=pool1'),
    'deepfashion_inpainting': _DEEPFASHION,
    'deepfashion_colorization': _DEEPFASHION + ('regression', 'sample,regression,quick', 'classification',
                                               'variant=csv,mode=regression'),
    'fmnist_simclr': ('', 'quick', 'resnet18_cifar', 'resnet18_cifar,quick', 'model=cifarnet,quick=true'),
    'fmnist_byol': ('', 'quick', 'resnet18_cifar', 'resnet18_cifar,quick', 'cifarnet',
                    'model=resnet18_cifar,quick=true'),
    'deepfashion_simclr': _DEEPFASHION,
    'deepfashion_byol': _DEEPFASHION,
    'fmnist_patch_location': ('', 'quick', 'quick=true'),
    'fmnist_exemplar': ('', 'quick', 'resnet18_cifar', 'resnet18_cifar,quick', 'model=cifarnet,quick=true'),
    'deepfashion_exemplar': _DEEPFASHION,
    'deepfashion_patch_location': _DEEPFASHION,
    'folder_rotation': ('', 'quick', 'sample', 'sample,quick', 'variant=folder,quick=true'),
    'folder_label_volumes': ('', 'quick', 'sample', 'sample,quick'),
}


def _experiments():
  return sorted(p.stem for p in CONFIGS.glob('*.py') if p.stem not in LIBRARIES)


def _image_shape(config):
  """The stored image shape the data config describes (what the dataset would report once prepared)."""
  if config.data.name == 'fashion_mnist':
    size = config.data.pad_to or 28
    return (size, size, 1)
  return (config.data.image_size, config.data.image_size, 3)


def _dataset_stand_in(config):
  """What tasks take from the dataset, without preparing it: class and attribute counts of each DeepFashion
  layout (the sample has 26 attributes and no categories)."""
  name = config.data.name
  classes = {'fashion_mnist': 10, 'deepfashion': 50, 'image_csv': 50, 'deepfashion_attr': 0, 'image_folder': 2}[name]
  attributes = {'fashion_mnist': 0, 'deepfashion': 1000, 'image_csv': 1000, 'deepfashion_attr': 26,
                'image_folder': 0}[name]
  channels = _image_shape(config)[-1]
  return types.SimpleNamespace(num_classes=classes, mean=(0.5,) * channels, std=(0.25,) * channels,
                               attribute_names=tuple(f'a{i}' for i in range(attributes)),
                               attribute_frequency=(0.1,) * attributes)


def _check(config):
  """check_config; a config that starts from a weights file the user downloads (``:imagenet``) must say, in one
  line, that the file is missing here, and passes the check without it."""
  if config.init_from.endswith('.safetensors'):
    with pytest.raises(ValueError, match=f'init_from={re.escape(config.init_from)}: no such weights file'):
      check_config(config)
    config.init_from = ''
  check_config(config)


def test_every_config_is_listed():
  assert sorted(ARGS) == _experiments(), 'add the new config and its documented arguments to ARGS'


@pytest.mark.parametrize('name,arg', [(n, a) for n, args in ARGS.items() for a in args])
def test_config_checks_and_builds(name, arg):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config(arg)
  _check(config)
  if arg == '':
    assert config.to_dict() == module.get_config().to_dict()   # as ml_collections calls it without an argument
  shape = _image_shape(config)
  tasks, _ = build_tasks(config.tasks, _dataset_stand_in(config))

  def build():
    rngs = nnx.Rngs(0)
    # As jaxssl.train.state.build_model does, less model.conv_impl (how convolutions run, not their shapes).
    backbone = build_backbone(config.model.name, input_shape=tasks[0].backbone_input_shape(shape), rngs=rngs,
                              **config.model.options)
    return backbone, {t.name: t.make_head(backbone, shape, rngs) for t in tasks}

  backbone, heads = nnx.eval_shape(build)
  assert set(heads) == set(config.tasks)
  params = jax.tree.leaves(nnx.state(backbone, nnx.Param))
  assert params and all(isinstance(p, jax.ShapeDtypeStruct) for p in params)
  if config.mode == 'knn' and config.knn.feature:
    assert config.knn.feature in backbone.feature_names


def _spec(module) -> dict:
  """The arguments a config knows: what its get_config hands configs/common.py's parse_arg."""
  spec = {}
  parse_arg = common.parse_arg

  def spy(arg, **known):
    spec.update(known)
    return parse_arg(arg, **known)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(common, 'parse_arg', spy)
    module.get_config('')
  return spec


@pytest.mark.parametrize('name', sorted(ARGS))
def test_args_try_everything_each_config_knows(name):
  """ARGS gives every argument a config knows at least once, so test_config_checks_and_builds loads each: every
  word of each choice (its default also by ''), each flag, the free word (a layer name) and each number
  (``key=value``)."""
  spec = _spec(importlib.import_module(f'configs.{name}'))
  tokens = [t for arg in ARGS[name] for t in arg.split(',') if t]
  pairs = {tuple(t.split('=', 1)) for t in tokens if '=' in t}
  keys, bare = {k for k, _ in pairs}, {t for t in tokens if '=' not in t}
  named = {w for v in spec.values() if isinstance(v, common.Choice) for w in v} | \
      {k for k, v in spec.items() if isinstance(v, bool)}
  missing = []
  for key, default in spec.items():
    if isinstance(default, common.Choice):
      missing += [f'{key}: {w}' for w in default if w not in bare and (key, w) not in pairs
                  and not (w == default.default and '' in ARGS[name])]   # '' is the default's config
    elif isinstance(default, bool):
      missing += [] if key in bare or (key, 'true') in pairs else [key]
    elif isinstance(default, common.Word):
      missing += [] if bare - named or key in keys else [f'{key.upper()} (any word)']
    elif key not in keys:
      missing.append(f'{key}=...')
  assert not missing, f'add arguments to ARGS[{name!r}] that use {missing}'


def test_commands_in_the_docstrings_load():
  """Every ``configs/X.py:ARG`` a config's docstring shows is a config argument that works."""
  shown = set()
  for name in _experiments():
    doc = importlib.import_module(f'configs.{name}').__doc__
    shown |= set(re.findall(r'configs/(\w+)\.py:(\S+)', doc))
  assert shown
  for name, arg in sorted(shown):
    _check(importlib.import_module(f'configs.{name}').get_config(arg))


def test_parse_arg_types_and_bare_words():
  spec = {'variant': common.Choice('a', 'b', default='b'), 'quick': False, 'steps': 10, 'lr': 0.1,
          'note': 'x', 'layer': common.Word('fc1')}
  a = common.parse_arg('', **spec)
  assert a.to_dict() == {'variant': 'b', 'quick': False, 'steps': 10, 'lr': 0.1, 'note': 'x', 'layer': 'fc1'}
  a = common.parse_arg('a,quick,steps=3,lr=1e-3,note=y,conv2', **spec)
  assert a.to_dict() == {'variant': 'a', 'quick': True, 'steps': 3, 'lr': 1e-3, 'note': 'y', 'layer': 'conv2'}
  assert type(a.layer) is str and type(a.steps) is int and type(a.lr) is float   # pylint: disable=unidiomatic-typecheck
  a = common.parse_arg('variant=a,quick=false,lr=2,layer=pool2', **spec)
  assert (a.variant, a.quick, a.lr, a.layer) == ('a', False, 2.0, 'pool2') and isinstance(a.lr, float)
  assert common.parse_arg(None, quick=False).quick is False
  # A word a letter or two from one the config knows is its typo, not a layer name.
  for typo, meant in (('quik', 'quick'), ('a,quic', 'quick')):
    with pytest.raises(ValueError, match=re.escape(f"(did you mean '{meant}'? another word is taken as layer)")):
      common.parse_arg(typo, **spec)


@pytest.mark.parametrize('arg,message', [
    ('sampel', "unknown config argument 'sampel'; it knows: benchmark, sample, csv, quick "
               '(or key=value, key one of: variant, quick)'),
    ('sample,size=3', "unknown config argument 'size=3' in 'sample,size=3'; it knows: benchmark, sample, csv"),
    ('quick=maybe', "config argument 'quick=maybe': quick takes true or false"),
    ('variant=sampel', "config argument 'variant=sampel': variant takes one of benchmark, sample, csv"),
    ('sample,csv', "config argument 'sample,csv' sets variant twice"),
])
def test_parse_arg_rejects_with_one_line(arg, message):
  deepfashion_rotation = importlib.import_module('configs.deepfashion_rotation')
  with pytest.raises(ValueError, match=re.escape(message)):
    deepfashion_rotation.get_config(arg)


def test_parse_arg_rejects_bad_numbers():
  with pytest.raises(ValueError, match=re.escape("config argument 'steps=1.5': steps takes an integer")):
    common.parse_arg('steps=1.5', steps=10)
  with pytest.raises(ValueError, match=re.escape("config argument 'lr=fast': lr takes a number")):
    common.parse_arg('lr=fast', lr=0.1)
