"""Faster decoding of prepared JPEG images: simplejpeg (libjpeg-turbo, ``pip install simplejpeg``) where it is
installed, tfds's own decoding (PIL) where it is not, with the same pixels either way.

Decoding is most of what the input pipeline spends on a photo dataset: on the DeepFashion sample (2026-11-30,
2-core CPU) reading a record took ~14 us, parsing it ~50 us, and PIL's decode of its JPEG ~200 us at 112 px and
~460 us at 256 px, where simplejpeg took ~85 and ~215 us (OpenCV, which tfds prefers when it is installed,
~95 and ~330 us, and a 60 MB wheel). simplejpeg and Pillow's wheels both decode with libjpeg-turbo's accurate
integer IDCT and fancy upsampling: on every image of the sample, at both sizes, the arrays were identical, so a
run's batches (and a resumed run's) do not depend on which decoder a machine has. Anything simplejpeg cannot
decode (not a JPEG, a channel count it does not give) goes to tfds's decoding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxssl.data.sources import find_under, is_tfds_source

try:
  import simplejpeg
except ImportError:  # optional: tfds decodes with PIL
  simplejpeg = None

_COLORSPACES = {1: 'GRAY', 3: 'RGB'}


class JpegDecoder(tfds.decode.Decoder):
  """tfds's decoder of an ``Image`` feature, with simplejpeg for JPEG bytes (module docstring)."""

  def decode_example(self, serialized_example):   # TensorFlow's path: tfds's own
    return self.feature.decode_example(serialized_example)

  def decode_example_np(self, serialized_example):
    data = serialized_example if isinstance(serialized_example, bytes) else bytes(serialized_example)
    channels = (self.feature.shape or (None,))[-1]
    if simplejpeg is not None and data[:2] == b'\xff\xd8' and channels in _COLORSPACES:
      try:
        image = simplejpeg.decode_jpeg(data, colorspace=_COLORSPACES[channels], fastdct=False, fastupsample=False)
      except ValueError:   # a JPEG libjpeg-turbo's simple API refuses (CMYK, ...): tfds's decoding says what
        image = None
      if image is not None and image.dtype == np.dtype(self.feature.np_dtype):
        return image.reshape(image.shape[:2] + (channels,))
    return self.feature.decode_example_np(data)


def _tfds_source(source) -> Any | None:
  """The tfds data source under jaxssl's views of it (IndexedSubset, PaddedImages, ... hold it as ``source``)."""
  return find_under(source, is_tfds_source)[1]


def use_fast_decoder(source) -> bool:
  """Makes the tfds source under ``source`` decode its ``image`` feature with :class:`JpegDecoder` (in place: the
  same source object, so grain's workers get it too); whether it does. A source whose images are not an
  ``Image`` feature, are stored as PNG (Fashion-MNIST) or already have a decoder is left as it is; so is every
  source where simplejpeg is not installed."""
  tfds_source = _tfds_source(source)
  if simplejpeg is None or tfds_source is None:
    return False
  decoders = tfds_source.decoders or {}
  if isinstance(decoders.get('image'), JpegDecoder):
    return True
  features = getattr(tfds_source.dataset_info, 'features', None)
  image = features['image'] if features is not None and 'image' in features.keys() else None
  if 'image' in decoders or not isinstance(image, tfds.features.Image) or image.encoding_format == 'png':
    return False
  tfds_source.decoders = {**decoders, 'image': JpegDecoder()}
  return True
