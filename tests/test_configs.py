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
LIBRARIES = ('__init__', 'common', 'deepfashion_common')   # imported by configs, not experiments themselves

_DEEPFASHION = ('', 'sample', 'csv', 'quick', 'sample,quick', 'benchmark,quick', 'csv,quick')
ARGS = {
    'fmnist_supervised': ('', 'quick'),
    'fmnist_rotation': ('', 'quick'),
    'fmnist_rotation_jigsaw': ('', 'quick'),
    'fmnist_jigsaw': ('', 'quick', '2x2_perm', '3x3_perm', '2x2_coords', '3x3_coords', '2x2_perm,quick',
                      '3x3_perm,quick', '2x2_coords,quick', '3x3_coords,quick', 'variant=2x2_coords,quick=true'),
    'fmnist_resnet': ('', 'resnet20', 'resnet18_cifar', 'resnet18', 'resnet50'),
    'fmnist_linear': ('', 'fc1', 'conv2', 'pool2', 'pool2,avg', 'conv2,avg', 'layer=conv1,pool=avg'),
    'fmnist_knn': ('', 'conv2', 'fc1', 'layer=pool2'),
    'fmnist_finetune': ('', 'all', 'last:1', 'last:3', 'trainable=last:2'),
    'fmnist_label_efficiency': ('', 'all', 'last:1'),
    'deepfashion_multitask': _DEEPFASHION,
    'deepfashion_rotation': _DEEPFASHION,
    'deepfashion_jigsaw': _DEEPFASHION,
    'fmnist_autoencoder': ('', 'quick', 'gaussian', 'masking', 'salt_pepper', 'gaussian,quick', 'bce', 'fc1',
                           'noise=masking,level=0.5,loss=bce,layer=conv2'),
    'fmnist_inpainting': ('', 'quick', 'blocks', 'center,zero', 'blocks,noise,quick', 'size=0.3', 'conv2'),
    'deepfashion_inpainting': _DEEPFASHION,
    'deepfashion_colorization': _DEEPFASHION + ('regression', 'sample,regression,quick'),
    'fmnist_simclr': ('', 'quick', 'resnet18_cifar', 'resnet18_cifar,quick', 'model=cifarnet,quick=true'),
    'fmnist_byol': ('', 'quick', 'resnet18_cifar', 'resnet18_cifar,quick'),
    'deepfashion_simclr': _DEEPFASHION,
    'deepfashion_byol': _DEEPFASHION,
    'fmnist_patch_location': ('', 'quick'),
    'fmnist_exemplar': ('', 'quick', 'resnet18_cifar', 'resnet18_cifar,quick', 'model=cifarnet,quick=true'),
    'deepfashion_exemplar': _DEEPFASHION,
    'deepfashion_patch_location': _DEEPFASHION,
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
  classes = {'fashion_mnist': 10, 'deepfashion': 50, 'image_csv': 50, 'deepfashion_attr': 0}[name]
  attributes = {'fashion_mnist': 0, 'deepfashion': 1000, 'image_csv': 1000, 'deepfashion_attr': 26}[name]
  channels = _image_shape(config)[-1]
  return types.SimpleNamespace(num_classes=classes, mean=(0.5,) * channels, std=(0.25,) * channels,
                               attribute_names=tuple(f'a{i}' for i in range(attributes)),
                               attribute_frequency=(0.1,) * attributes)


def test_every_config_is_listed():
  assert sorted(ARGS) == _experiments(), 'add the new config and its documented arguments to ARGS'


@pytest.mark.parametrize('name,arg', [(n, a) for n, args in ARGS.items() for a in args])
def test_config_checks_and_builds(name, arg):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config(arg)
  check_config(config)
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


def test_commands_in_the_docstrings_load():
  """Every ``configs/X.py:ARG`` a config's docstring shows is a config argument that works."""
  shown = set()
  for name in _experiments():
    doc = importlib.import_module(f'configs.{name}').__doc__
    shown |= set(re.findall(r'configs/(\w+)\.py:(\S+)', doc))
  assert shown
  for name, arg in sorted(shown):
    check_config(importlib.import_module(f'configs.{name}').get_config(arg))


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


@pytest.mark.parametrize('arg,message', [
    ('sampel', "unknown config argument 'sampel'; it knows: benchmark, sample, csv, quick "
               '(or key=value, key one of: variant, quick)'),
    ('sample,size=3', "unknown config argument 'size=3' in 'sample,size=3'; it knows: benchmark, sample, csv"),
    ('quick=maybe', "config argument 'quick=maybe': quick takes true or false"),
    ('variant=sampel', "config argument 'variant=sampel': variant takes one of benchmark, sample, csv"),
    ('sample,csv', "config argument 'sample,csv' sets variant twice"),
])
def test_parse_arg_rejects_with_one_line(arg, message):
  deepfashion_multitask = importlib.import_module('configs.deepfashion_multitask')
  with pytest.raises(ValueError, match=re.escape(message)):
    deepfashion_multitask.get_config(arg)


def test_parse_arg_rejects_bad_numbers():
  with pytest.raises(ValueError, match=re.escape("config argument 'steps=1.5': steps takes an integer")):
    common.parse_arg('steps=1.5', steps=10)
  with pytest.raises(ValueError, match=re.escape("config argument 'lr=fast': lr takes a number")):
    common.parse_arg('lr=fast', lr=0.1)
