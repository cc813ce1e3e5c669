"""The GPU bench's two halves: the batch made where the data are, and the step timed from it elsewhere (run here
on the CPU, without PyTorch, whose twin in that bench needs CUDA)."""

import numpy as np

from jaxssl.bench import gpu


def _check_rotation_batch(folder, source_batch: int):
  """The batch is ``source_batch`` images in their four rotations, tiled by --repeat, and the facts read back."""
  batch, info = gpu._load_batch(str(folder), 2)  # pylint: disable=protected-access
  images, labels = batch['rotation']['image'], batch['rotation']['label']
  assert images.shape == (2 * source_batch, 4, 32, 32, 1) and images.dtype == np.uint8
  assert info.input_shape == (32, 32, 1)
  np.testing.assert_array_equal(images[:source_batch], images[source_batch:])  # --repeat tiles the batch
  for row in range(source_batch):
    assert images[row, 0].std() > 0
    assert not images[row, 0, :2].any() and not images[row, 0, :, -2:].any()  # zero-padded from 28x28
    for k in range(4):  # the label is the rotation that was applied
      assert labels[row, k] == k
      np.testing.assert_array_equal(images[row, k], np.rot90(images[row, 0], k, axes=(0, 1)))
  return batch, info


def test_gpu_bench_batch_is_real_rotations_and_times_the_step(tfds_dir, tmp_path):
  gpu.make_batch(str(tmp_path), 4, data_dir=tfds_dir)
  batch, info = _check_rotation_batch(tmp_path, 4)
  times, compile_s = gpu.jax_times('float32', batch, info, steps=2, warmup=1)
  assert len(times) == 2 and min(times) > 0 and compile_s > 0


def test_gpu_bench_batch_from_generated_data(generated_tfds_dir, tmp_path):
  """The batch half without the real files (the step half is the test above's)."""
  gpu.make_batch(str(tmp_path), 3, data_dir=generated_tfds_dir)
  _check_rotation_batch(tmp_path, 3)
