"""What the input pipeline costs and how it got cheaper: the bench's input figures (rate per worker count, cost
per stage, what an H100 step would ask), and the JPEG decoder that gives tfds's pixels faster (the real
DeepFashion sample)."""

import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

from conftest import small_config
from jaxssl.bench import input as input_bench, step as bench
from jaxssl.data import augment, jpeg
from jaxssl.data.datasets import get_dataset, load_split
from jaxssl.data.pipeline import machine_cores
from jaxssl.data.sources import read_records


def test_gpu_on_paper_scales_the_recorded_h100_step_by_flops():
  """The recorded step itself comes back at its recorded rate; a step of twice the FLOPs per image at half."""
  same = input_bench.gpu_on_paper(input_bench.H100_REFERENCE_GFLOPS_PER_STEP, 256, 1000.0)
  assert same['bfloat16'] == {'h100_step_images_per_s': 18491.0, 'cores_needed': 18.5}
  assert same['float32']['h100_step_images_per_s'] == 9255.0
  double = input_bench.gpu_on_paper(input_bench.H100_REFERENCE_GFLOPS_PER_STEP, 128, 500.0)
  assert double['bfloat16'] == {'h100_step_images_per_s': 9246.0, 'cores_needed': 18.5}
  assert not input_bench.gpu_on_paper(0.0, 256, 1.0)


def test_worker_counts_go_up_to_the_cores():
  assert input_bench.worker_counts(2) == [0, 1, 2]
  assert input_bench.worker_counts(1) == [0, 1]
  assert input_bench.worker_counts(12) == [0, 1, 2, 4, 8, 12]
  assert input_bench.worker_counts(16) == [0, 1, 2, 4, 8, 16]


def test_the_bench_reports_the_input_by_worker_count_and_stage(generated_tfds_dir):
  config = small_config(generated_tfds_dir, batch_size=16)
  config.model.conv_impl = 'xla'
  result = bench.measure(config, steps=1, warmup=0, pipeline_batches=2, peak_gflops=166.0, worker_counts=[0, 1],
                         stage_batches=2)
  assert result['input_settings'] == f'input: 0 workers x 1 thread, prefetch 4 (auto: {machine_cores()} cores, cpu)'
  assert set(result['pipeline_images_per_s_by_workers']) == set(result['pipeline_to_step_ratio_by_workers']) == {
      '0', '1'}
  assert set(result['pipeline_us_per_image']) == {'read_decode', 'stack', 'transform', 'to_device'}
  for dtype in ('bfloat16', 'float32'):
    paper = result['gpu_on_paper'][dtype]
    assert paper['h100_step_images_per_s'] == pytest.approx(input_bench.gpu_on_paper(   # gflops_per_step: rounded
        result['gflops_per_step'], 16, 1.0)[dtype]['h100_step_images_per_s'], rel=1e-3)
  text = bench.input_summary(result)
  assert text.startswith('input: 0 workers x 1 thread') and 'by worker processes: 0: ' in text
  assert 'per image: read_decode ' in text and 'on paper, an H100 step in bfloat16' in text
  plain = bench.measure(config, steps=1, warmup=0, pipeline_batches=1, peak_gflops=166.0)
  assert 'pipeline_images_per_s_by_workers' not in plain and 'gpu_on_paper' not in plain   # asked for only


def test_random_flip_mirrors_whole_pixels():
  """The faster flip (a pixel's channels moved as one item) gives the mirrored images, channels in order."""
  images = np.arange(4 * 3 * 5 * 3, dtype=np.uint8).reshape(4, 3, 5, 3)
  out = augment.random_flip(images, np.random.default_rng(0), prob=0.5)
  flip = np.random.default_rng(0).random(4) < 0.5
  assert 0 < flip.sum() < 4
  np.testing.assert_array_equal(out[flip], images[flip][:, :, ::-1, :])
  np.testing.assert_array_equal(out[~flip], images[~flip])
  grey = images[..., :1].copy()
  np.testing.assert_array_equal(augment.random_flip(grey, np.random.default_rng(0))[flip], grey[flip][:, :, ::-1])


@pytest.fixture(scope='module')
def sample_jpeg(deepfashion_sample, tmp_path_factory):
  data = ml_collections.ConfigDict({'name': 'deepfashion_attr', 'source_dir': deepfashion_sample,
                                    'data_dir': str(tmp_path_factory.mktemp('tfds')), 'image_size': 48,
                                    'crop_bbox': False, 'image_format': 'jpeg', 'prepare_workers': 2,
                                    'train_split': 'train', 'eval_split': 'val'})
  return get_dataset('deepfashion_attr', data), data


def test_the_fast_decoder_gives_tfds_pixels(sample_jpeg):
  """Every training image of the real sample: simplejpeg's arrays equal tfds's (PIL's), the other features too."""
  if jpeg.simplejpeg is None:
    pytest.skip('simplejpeg is not installed (pip install simplejpeg): tfds decodes')
  info, data = sample_jpeg
  plain, fast = load_split(info, 'train', data), load_split(info, 'train', data)
  assert jpeg.use_fast_decoder(fast) and not plain.decoders
  assert isinstance(fast.decoders['image'], jpeg.JpegDecoder)
  indices = range(len(plain))
  for a, b in zip(read_records(plain, indices), read_records(fast, indices)):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_without_simplejpeg_tfds_decodes(sample_jpeg, monkeypatch):
  info, data = sample_jpeg
  source = load_split(info, 'train', data)
  decoder = jpeg.JpegDecoder()
  decoder.setup(feature=source.dataset_info.features['image'])
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(buffer, format='PNG')
  png = buffer.getvalue()
  np.testing.assert_array_equal(decoder.decode_example_np(png), np.zeros((48, 48, 3), np.uint8))  # not a JPEG
  monkeypatch.setattr(jpeg, 'simplejpeg', None)
  assert not jpeg.use_fast_decoder(source) and not source.decoders
  assert read_records(source, [0])[0]['image'].shape == (48, 48, 3)
