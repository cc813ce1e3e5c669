"""The GPU bench's two halves: the batch made where the data are, and the step timed from it elsewhere (run here
on the CPU, without PyTorch, whose twin in that bench needs CUDA)."""

import numpy as np

from jaxssl import bench_gpu


def test_gpu_bench_batch_is_real_rotations_and_times_the_step(tfds_dir, tmp_path):
  bench_gpu.make_batch(str(tmp_path), 4)
  batch, info = bench_gpu._load_batch(str(tmp_path), 2)  # pylint: disable=protected-access
  images, labels = batch['rotation']['image'], batch['rotation']['label']
  assert images.shape == (8, 4, 32, 32, 1) and images.dtype == np.uint8 and info.input_shape == (32, 32, 1)
  np.testing.assert_array_equal(images[:4], images[4:])  # --repeat tiles the batch
  for row in range(4):
    assert images[row, 0].std() > 0  # a real garment, zero-padded from 28x28
    for k in range(4):  # the label is the rotation that was applied
      assert labels[row, k] == k
      np.testing.assert_array_equal(images[row, k], np.rot90(images[row, 0], k, axes=(0, 1)))
  times, compile_s = bench_gpu.jax_times('float32', batch, info, steps=2, warmup=1)
  assert len(times) == 2 and min(times) > 0 and compile_s > 0


def test_the_benches_import_in_one_process():
  """Their flags do not clash (the test run imports all three in one process)."""
  import importlib  # pylint: disable=import-outside-toplevel
  for name in ('jaxssl.bench', 'jaxssl.bench_ops', 'jaxssl.bench_gpu'):
    importlib.import_module(name)
