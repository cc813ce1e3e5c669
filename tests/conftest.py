"""Shared fixtures: the real Fashion-MNIST, prepared once per session into a temporary tfds data_dir."""

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ is imported as a package by the tests


def fashion_mnist_dir() -> str | None:
  """CI sets JAXSSL_FASHION_MNIST_DIR; a checkout beside ../shared finds the data there."""
  for d in (os.environ.get('JAXSSL_FASHION_MNIST_DIR'), REPO.parent / 'shared' / 'data' / 'fashion_mnist',
            '/usr/share/datasets/fashion-mnist'):
    if d and (pathlib.Path(d) / 't10k-labels-idx1-ubyte.gz').exists():
      return str(d)
  return None


def deepfashion_sample_dir() -> str | None:
  """$JAXSSL_DEEPFASHION_SAMPLE_DIR, else ../shared/data/deepfashion_attr_sample beside the checkout."""
  for d in (os.environ.get('JAXSSL_DEEPFASHION_SAMPLE_DIR'), REPO.parent / 'shared' / 'data' / 'deepfashion_attr_sample'):
    if d and (pathlib.Path(d) / 'split' / 'train_attr.txt').exists():
      return str(d)
  return None


@pytest.fixture(scope='session')
def deepfashion_sample():
  src = deepfashion_sample_dir()
  if not src:
    pytest.skip('the real DeepFashion attribute sample was not found: set JAXSSL_DEEPFASHION_SAMPLE_DIR to the '
                'folder holding img/ and split/ (../shared/data/deepfashion_attr_sample beside the checkout)')
  return src


def pytest_configure(config):  # pylint: disable=unused-argument
  # grain's multiprocess prefetch reads absl flags; pytest does not parse them.
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.mark_as_parsed()
  src = fashion_mnist_dir()
  if src:
    os.environ['JAXSSL_FASHION_MNIST_DIR'] = src


@pytest.fixture(scope='session')
def fmnist_source_dir():
  src = fashion_mnist_dir()
  if not src:
    pytest.skip('real Fashion-MNIST not found: set JAXSSL_FASHION_MNIST_DIR to the folder of the four .gz files')
  return src


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory, fmnist_source_dir):
  """A data_dir with jaxssl_fashion_mnist prepared from the real files (about 12 s, once)."""
  from jaxssl.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  d = str(tmp_path_factory.mktemp('tfds'))
  fashion_mnist.data_source('train', data_dir=d, source_dir=fmnist_source_dir)
  return d


def small_config(tfds_dir, **overrides):
  """fmnist_supervised on a slice of the real data, sized for tests (a few seconds of training)."""
  from configs import fmnist_supervised  # pylint: disable=import-outside-toplevel
  c = fmnist_supervised.get_config()
  c.data.data_dir = tfds_dir
  c.data.train_limit = 2048
  c.data.eval_limit = 300
  c.batch_size = 64
  c.eval_batch_size = 128
  c.total_steps = 16
  c.log_every = 1
  c.eval_every = 8
  c.checkpoint_every = 4
  c.optim.warmup_epochs = 0.0
  for key, value in overrides.items():
    node = c
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return c
