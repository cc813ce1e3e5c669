"""Torchvision-format weights (ImageNet-pretrained AlexNet, ResNet-18, ResNet-50) in jaxssl's backbones.

``config.init_from`` naming a ``.safetensors`` file (read with safetensors' numpy reader: no torch needed) or a
``.pth`` / ``.pt`` state dict (read with torch, ``weights_only=True``) starts the backbone from those weights
(jaxssl/train/transfer.py). They load into the backbones built like torchvision's:

- ``resnet18``, ``resnet50`` (width 1): v1.5 with torchvision's padding and BatchNorm epsilon (1e-5). Names:
  conv1/bn1 -> stem_conv/stem_bn, layerK.J.convN/bnN -> stages[K-1][J].convN/bnN, layerK.J.downsample.0/.1 ->
  stages[K-1][J].shortcut.conv/bn, BatchNorm running_mean/running_var -> its statistics mean/var
  (num_batches_tracked has no counterpart and is skipped). Every BatchNorm scale is loaded, so the zero scale a
  fresh residual branch starts with leaves no trace.
- ``alexnet`` with ``model.options.arch='torchvision'`` (and norm 'none'): features.0/3/6/8/10 -> conv1..conv5,
  classifier.1/4 -> fc6/fc7. torch flattens pool5 channel-major (C, H, W), jaxssl (H, W, C): fc6's input rows
  are permuted at import.

Layouts: a torch convolution weight [out, in, kh, kw] becomes [kh, kw, in, out], a linear weight [out, in]
becomes [in, out]. Every array the backbone has must be in the file with the matching shape, and nothing else
may be there but the ImageNet classifier (``fc.*`` / ``classifier.6.*``) and the BatchNorm counters; anything
else is listed, all of it, in one :class:`WeightsError`. The classifier is not part of the backbone: it comes
back separately, and :func:`imagenet_logits` applies it to the backbone's output (``output_name``) to give
torchvision's logits.

Inputs: torchvision's ImageNet models expect RGB in [0, 1] standardized with ImageNet's mean and std
(jaxssl/data/datasets.py IMAGENET_MEAN, IMAGENET_STD), jaxssl standardizes with the dataset's own: set
``--config.data.normalize=imagenet`` to feed them what they were trained on.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl import files, trees
from jaxssl.models.alexnet import POOL5_SIZE, AlexNet
from jaxssl.models.resnet import ResNet

SUFFIXES = ('.safetensors', '.pth', '.pt')
# The backbones torchvision's weights fit, and the options they need.
MODELS = {'resnet18': {}, 'resnet50': {}, 'alexnet': {'arch': 'torchvision', 'norm': 'none'}}
_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
_ALEXNET = {'conv1': 'features.0', 'conv2': 'features.3', 'conv3': 'features.6', 'conv4': 'features.8',
            'conv5': 'features.10', 'fc6': 'classifier.1', 'fc7': 'classifier.4'}
_SKIPPED_SUFFIX = '.num_batches_tracked'  # BatchNorm's step counter: no counterpart in flax
_SHOWN = 5


class WeightsError(ValueError):
  """A weights file that does not fit the backbone, or cannot be read: the message names the arrays and the fix.
  (jaxssl/train/transfer.py reports it as a TransferError, one line in the CLI.)"""


def is_weights_file(path: str) -> bool:
  """Whether ``init_from`` names a torchvision-format weights file rather than a jaxssl run."""
  return str(path).lower().endswith(SUFFIXES)


def check_weights_file(init_from: str, init_step: int = -1) -> None:
  """``init_from``, a weights file, exists and can be read here, and no ``init_step`` is asked of it."""
  if init_step >= 0:
    raise WeightsError(f'init_from={init_from} is a weights file (one set of weights), but init_step={init_step}: '
                       'set --config.init_step=-1')
  if not files.exists(os.path.expanduser(init_from)):
    raise WeightsError(f'init_from={init_from}: no such weights file; give the path of a torchvision-format '
                       f"{' / '.join(SUFFIXES)} file")
  if not init_from.lower().endswith('.safetensors'):
    _torch()


def check_weights_config(init_from: str, init_step: int, model_name: str, options: dict[str, Any]) -> None:
  """What the config check can tell before any data is read: the file is there, it can be read, and the model
  is one that torchvision's weights fit."""
  if not is_weights_file(init_from):
    return
  check_weights_file(init_from, init_step)
  if model_name not in MODELS:
    raise WeightsError(f"init_from={init_from} holds torchvision weights, which fit the models "
                       f"{', '.join(MODELS)}, not '{model_name}': set --config.model.name")
  from jaxssl.models import BACKBONES  # pylint: disable=import-outside-toplevel  # the package does not import us
  constructor = BACKBONES[model_name]
  constructor = constructor.__init__ if isinstance(constructor, type) else constructor  # a class: its __init__
  defaults = {n: p.default for n, p in inspect.signature(constructor).parameters.items()}
  has = {k: options.get(k, defaults.get(k)) for k in MODELS[model_name]}
  wrong = {k: v for k, v in MODELS[model_name].items() if has[k] != v}
  if wrong:
    raise WeightsError(f'torchvision weights load into {model_name} with '
                       + ', '.join(f'--config.model.options.{k}={v}' for k, v in wrong.items())
                       + f" (this config has {', '.join(f'{k}={has[k]}' for k in wrong)})")


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise WeightsError('reading a .pth/.pt weights file needs torch (pip install "jaxssl[torch]"); or convert it '
                       'once where torch is installed: python -c "import sys, torch; from safetensors.torch import '
                       'save_file; save_file(torch.load(sys.argv[1], weights_only=True), sys.argv[2])" '
                       'in.pth out.safetensors') from None
  return torch


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], str]:
  """(the file's arrays by torchvision name, the file's sha256). ``.safetensors`` needs only numpy; ``.pth`` /
  ``.pt`` (a plain state dict, as torchvision's downloads are) needs torch."""
  try:
    data = files.read_bytes(os.path.expanduser(path))
  except FileNotFoundError:
    raise WeightsError(f'init_from={path}: no such weights file') from None
  digest = hashlib.sha256(data).hexdigest()
  if str(path).lower().endswith('.safetensors'):
    from safetensors.numpy import load  # pylint: disable=import-outside-toplevel
    try:
      return dict(load(data)), digest
    except Exception as e:  # pylint: disable=broad-exception-caught  # the reader's own errors vary by version
      why = ' '.join(str(e).split())[:200]
      raise WeightsError(f'cannot read {path} as safetensors ({type(e).__name__}: {why}); is it a complete '
                         '.safetensors file?') from None
  torch = _torch()
  try:
    loaded = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-exception-caught  # pickle and torch errors alike
    text = str(e)
    # torch's refusal of a pickle it will not run names the cause after 'WeightsUnpickler error:', and advises
    # weights_only=False (running the file's code), which jaxssl never does.
    why = text.split('WeightsUnpickler error:', 1)[1].split('Check the documentation')[0] if \
        'WeightsUnpickler error:' in text else text
    raise WeightsError(f"cannot read {path} as a PyTorch state dict ({type(e).__name__}: {' '.join(why.split())[:200]})"
                       '; is it a complete .pth of tensors only (torch.save(model.state_dict(), path))? jaxssl '
                       'loads weights only, never the code a pickle may hold') from None
  if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
    raise WeightsError(f'{path} is not a plain state dict (name -> tensor) as torchvision saves them; save '
                       "model.state_dict() (or the checkpoint's 'state_dict' entry) on its own")
  return {k: (v.float() if v.is_floating_point() and v.dtype not in (torch.float16, torch.float32, torch.float64)
              else v).detach().cpu().numpy() for k, v in loaded.items()}, digest


# ---- Names and layouts.

def _layout(backbone: nnx.Module) -> tuple[Callable[[tuple[str, ...]], str], str]:
  """(jaxssl module path -> torchvision module name, torchvision's classifier name) for ``backbone``."""
  if isinstance(backbone, ResNet):
    if not backbone.imagenet_stem:
      raise WeightsError('torchvision ResNets have the ImageNet stem (7x7/2 conv and max pool): use '
                         '--config.model.name=resnet18 or resnet50, not a CIFAR ResNet')
    return _resnet_name, 'fc'
  if isinstance(backbone, AlexNet):
    if backbone.arch != 'torchvision' or backbone.norm != 'none':
      raise WeightsError("torchvision's AlexNet weights load into --config.model.options.arch=torchvision with "
                         f"norm=none (this model has arch={backbone.arch}, norm={backbone.norm})")
    return lambda path: _ALEXNET.get(path[0], '/'.join(path)), 'classifier.6'
  raise WeightsError(f'{type(backbone).__name__} has no torchvision counterpart; torchvision weights load into: '
                     f"{', '.join(MODELS)} (alexnet with model.options.arch=torchvision)")


def _resnet_name(path: tuple[str, ...]) -> str:
  if path[0] in ('stem_conv', 'stem_bn'):
    return {'stem_conv': 'conv1', 'stem_bn': 'bn1'}[path[0]]
  if path[0] == 'stages' and len(path) >= 4:
    block = f'layer{int(path[1]) + 1}.{path[2]}'
    if path[3] == 'shortcut' and len(path) == 5:
      return f"{block}.downsample.{ {'conv': 0, 'bn': 1}[path[4]] }"
    return f'{block}.{path[3]}'
  return '/'.join(path)


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """A jaxssl array's shape in torch's layout: conv [kh, kw, in, out] -> [out, in, kh, kw], linear [in, out] ->
  [out, in]."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def _from_torch(array: np.ndarray, shape: tuple[int, ...], flatten_chw: bool) -> np.ndarray:
  """A torch array in jaxssl's layout (``shape``); ``flatten_chw``: a linear layer reading a (C, H, W)-flattened
  map (AlexNet's fc6), whose input rows jaxssl orders (H, W, C)."""
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2 and flatten_chw:
    out, c = array.shape[0], array.shape[1] // (POOL5_SIZE * POOL5_SIZE)
    return array.reshape(out, c, POOL5_SIZE, POOL5_SIZE).transpose(2, 3, 1, 0).reshape(shape)
  return array.T if array.ndim == 2 else array


def _looks_like(names) -> str:
  """A guess at the network a state dict is from, for the error message."""
  names = set(names)
  if 'features.0.weight' in names and 'classifier.1.weight' in names:
    return "torchvision's AlexNet"
  if 'layer1.0.conv1.weight' in names:
    blocks = [sum(1 for n in names if n.startswith(f'layer{k}.') and n.endswith('.conv1.weight')) for k in (1, 2, 3, 4)]
    kind = 'Bottleneck' if 'layer1.0.conv3.weight' in names else 'BasicBlock'
    known = {('BasicBlock', (2, 2, 2, 2)): 'ResNet-18', ('BasicBlock', (3, 4, 6, 3)): 'ResNet-34',
             ('Bottleneck', (3, 4, 6, 3)): 'ResNet-50', ('Bottleneck', (3, 4, 23, 3)): 'ResNet-101'}
    return known.get((kind, tuple(blocks)), f'a {kind} ResNet with {blocks} blocks')
  return 'an unknown network'


def _fix(state_dict: dict[str, np.ndarray], expected: dict[str, tuple[tuple[str, ...], tuple[int, ...]]]) -> str:
  """What to change, from what the file and the model look like."""
  file_kind, model_kind = _looks_like(state_dict), _looks_like(expected)
  if file_kind != model_kind:
    return (f'The file looks like {file_kind}, the model is {model_kind}: build the model the file was made for '
            '(--config.model.name resnet18 / resnet50, or alexnet with model.options.arch=torchvision)')
  for first in ('conv1.weight', 'features.0.weight'):  # the stem convolution: does it take as many channels?
    if first in expected and first in state_dict and state_dict[first].ndim == 4 and \
        state_dict[first].shape[1] != expected[first][1][1]:
      return (f'The weights take {state_dict[first].shape[1]}-channel images, this dataset has '
              f'{expected[first][1][1]}-channel ones: use RGB images')
  return f"Both are {model_kind}: build the model with torchvision's widths (model.options width 1, fc_width 4096)"


def _listed(what: str, items: list[str]) -> str:
  more = f' ... ({len(items)} in all)' if len(items) > _SHOWN else ''
  return f"{what} ({len(items)}): {', '.join(items[:_SHOWN])}{more}"


def convert(backbone: nnx.Module, state_dict: dict[str, np.ndarray], source: str = 'the weights file'
            ) -> tuple[dict[tuple[str, ...], np.ndarray], dict[str, np.ndarray] | None]:
  """(``backbone``'s arrays in jaxssl's layout by path, the ImageNet classifier as {'kernel': [F, K], 'bias':
  [K]} or None where the file has none) from a torchvision ``state_dict``; every mismatch in one WeightsError."""
  module_name, classifier = _layout(backbone)
  target = trees.flat_paths(nnx.state(backbone))
  expected = {}  # torchvision name -> (jaxssl path, torch shape)
  for path, leaf in target.items():
    if path[-1] not in _LEAVES:
      raise WeightsError(f"{'/'.join(path)} of {type(backbone).__name__} has no torchvision counterpart")
    expected[f'{module_name(path[:-1])}.{_LEAVES[path[-1]]}'] = (path, _torch_shape(tuple(leaf.shape)))
  skipped = {n for n in state_dict if n.startswith(classifier + '.') or n.endswith(_SKIPPED_SUFFIX)}
  missing = sorted(n for n in expected if n not in state_dict)
  unexpected = sorted(n for n in state_dict if n not in expected and n not in skipped)
  wrong = [f'{n} {tuple(state_dict[n].shape)} (want {shape})' for n, (_, shape) in sorted(expected.items())
           if n in state_dict and tuple(state_dict[n].shape) != shape]
  if missing or unexpected or wrong:
    problems = [_listed(w, items) for w, items in (('missing in the file', missing), ('not in the model', unexpected),
                                                   ('of another shape', wrong)) if items]
    raise WeightsError(f'{source} does not fit the {type(backbone).__name__} built from this config: '
                       f"{'; '.join(problems)}. {_fix(state_dict, expected)}")
  arrays = {}
  for name, (path, _) in expected.items():
    leaf = target[path]
    arrays[path] = _from_torch(np.asarray(state_dict[name]), tuple(leaf.shape),
                               flatten_chw=isinstance(backbone, AlexNet) and path[0] == 'fc6').astype(leaf.dtype)
  head = None
  if f'{classifier}.weight' in state_dict:
    kernel = np.asarray(state_dict[f'{classifier}.weight'], np.float32).T
    head = {'kernel': kernel, 'bias': np.asarray(state_dict.get(f'{classifier}.bias', np.zeros(kernel.shape[1])),
                                                 np.float32)}
  return arrays, head


def load_weights(backbone: nnx.Module, path: str) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
  """Copies a torchvision-format weights file into ``backbone`` in place; returns (what was loaded, for
  init_from.json; the ImageNet classifier or None, for :func:`imagenet_logits`). ``backbone`` may be abstract
  (``nnx.eval_shape(lambda: build_backbone(...))``): every array comes from the file, so nothing need be
  initialized first."""
  state_dict, digest = read_state_dict(path)
  arrays, head = convert(backbone, state_dict, source=str(path))
  state = nnx.state(backbone)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
  nnx.update(backbone, jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(arrays[trees.path_keys(p)]) for p, _ in leaves]))
  # Each array loaded is one of the file's; the rest (classifier, BatchNorm counters) were skipped.
  return {'checkpoint': files.abspath(os.path.expanduser(path)), 'format': 'torchvision',
          'sha256': digest, 'arrays': len(arrays), 'parameters': int(sum(a.size for a in arrays.values())),
          'skipped': len(state_dict) - len(arrays),
          'classifier': None if head is None else list(head['kernel'].shape)}, head


def imagenet_logits(features: jax.Array, classifier: dict[str, Any]) -> jax.Array:
  """torchvision's logits from the backbone's output (``features[backbone.output_name]``: ResNet 'pool',
  AlexNet 'fc7') and the classifier :func:`load_weights` returned."""
  return jnp.asarray(features, jnp.float32) @ jnp.asarray(classifier['kernel']) + jnp.asarray(classifier['bias'])
