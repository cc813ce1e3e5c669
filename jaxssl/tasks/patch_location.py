"""Relative patch location (context prediction; Doersch, Gupta & Efros, ICCV 2015).

A centre patch and one of its 8 neighbours in a 3x3 layout are cut from an image; the network sees both and
classifies which neighbour it got. Doing so needs the parts of an object and how they sit, not its label, so the
task runs on unlabeled images.

Geometry. Patches are ``patch_size`` squares laid out with a stride of ``patch_size + gap``; the neighbour is also
shifted by up to ``jitter`` pixels along each axis (a uniform integer draw, independent per axis), so the pixel gap
between the two is ``gap - jitter`` to ``gap + jitter`` along the offset and the patches are misaligned by up to
``jitter`` across it: lines and textures cannot simply be continued over the boundary (the paper: 96 px patches, a
48 px gap, 7 px jitter). The whole 3x3 layout, jitter included, is placed uniformly inside the image, so where the
centre patch lies does not depend on the label (placing only the chosen neighbour's pair would leak it: a centre at
the left edge could only have neighbours to its right). Cut for every row at once with vectorized numpy; patches
stay uint8 until they reach the device.

Chromatic aberration. The paper found its network telling a patch's place in the image from the colour fringes of
the lens (green and magenta shift apart towards the edges) instead of from its content. ``chroma`` counters it on
colour images, per patch, in the pipeline (eval draws the same treatment from its own seeded generator, so the
held-out figure measures the task that was trained):

* ``drop`` (the paper's choice): keep one of the three channels, drawn per patch, and replace the other two by
  their dataset mean plus Gaussian noise of ``drop_noise`` times the kept channel's standard deviation in that
  patch (the paper's 1/100; in uint8 that is below one grey level and mostly rounds away: the dropped channels
  carry nothing).
* ``project``: remove every pixel's component along the green-magenta axis (-1, 2, -1)/sqrt(6), moving green and
  magenta towards grey (the paper's other option; deterministic).
* ``none``.

A one-channel image (Fashion-MNIST) has no chromatic aberration to counter: ``chroma`` leaves it unchanged.

Network. The backbone encodes each patch alone with shared weights (the two patches are folded into the batch
axis), the two features (``feature``) are concatenated, centre first, and fully connected layers (``hidden_sizes``,
ReLU; the paper's fc7 and fc8 after fc6) feed an 8-way classifier. With ``canvas_size`` each patch is zero-padded,
centred, to that square before the backbone: a backbone whose layers fix its input size (CifarNet's fc1) is then
built for whole images, so its checkpoint loads into a linear probe or fine-tuning on the images. The patch is always
centred on the canvas: placing it where it was cut would show the network its position.

Labels: position i of ``OFFSETS`` (row-major around the centre: 0 top-left, 1 top, 2 top-right, 3 left, 4 right,
5 bottom-left, 6 bottom, 7 bottom-right). Metrics: ``acc`` and ``acc_0`` .. ``acc_7``, the accuracy over the pairs
of each position.

Batch layout: ``patches`` uint8 [B, 2, p, p, C] (centre, neighbour), ``label`` int32 [B], ``weight`` f32 [B].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxssl.tasks.base import Batch, Task, check_choice, head_input, mean_of, normalize, weighted_mean

# label -> (row, col) offset of the neighbour from the centre, in strides.
OFFSETS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)], np.int32)
CHROMA = ('drop', 'project', 'none')
GREEN_MAGENTA = np.array([-1.0, 2.0, -1.0]) / np.sqrt(6.0)


@dataclasses.dataclass(frozen=True)
class PairGeometry:
  """Where the 3x3 layout of a patch pair may lie in an image of a given size."""
  patch: int
  gap: int
  jitter: int
  image: tuple[int, int]   # (height, width)

  @property
  def stride(self) -> int:
    return self.patch + self.gap

  @property
  def slack(self) -> tuple[int, int]:
    """How far the jittered layout can move inside the image, per axis (>= 0)."""
    span = self.patch + 2 * self.stride + 2 * self.jitter
    return self.image[0] - span, self.image[1] - span


def pair_geometry(image_shape, patch: int, gap: int, jitter: int) -> PairGeometry:
  geo = PairGeometry(int(patch), int(gap), int(jitter), (int(image_shape[0]), int(image_shape[1])))
  if min(geo.slack) < 0:
    need = geo.patch + 2 * geo.stride + 2 * geo.jitter
    raise ValueError(f'a 3x3 layout of {geo.patch} px patches with a {geo.gap} px gap and {geo.jitter} px jitter '
                     f'spans {need} px, more than the {geo.image[0]}x{geo.image[1]} images: lower patch_size, gap or '
                     'jitter (3 * patch_size + 2 * gap + 2 * jitter <= the image side), or use larger images')
  return geo


def cut_pairs(images: np.ndarray, rng: np.random.Generator, geo: PairGeometry):
  """[B, H, W, C] -> (patches [B, 2, p, p, C] (centre, neighbour), label int32 [B], corners int32 [B, 2, 2]).

  ``corners`` are the two patches' top-left pixels (row, col) in their source image. Every draw is per row.
  """
  b, p, s = images.shape[0], geo.patch, geo.stride
  label = rng.integers(0, len(OFFSETS), size=b).astype(np.int32)
  # The layout's top-left, one draw per axis (a RowGenerator takes bounds shared by the rows only).
  origin = geo.jitter + np.stack([rng.integers(0, geo.slack[0] + 1, size=b), rng.integers(0, geo.slack[1] + 1, size=b)],
                                 axis=-1)
  shift = rng.integers(-geo.jitter, geo.jitter + 1, size=(b, 2))
  centre = origin + s
  neighbour = centre + OFFSETS[label] * s + shift
  corners = np.stack([centre, neighbour], axis=1).astype(np.int32)               # [B, 2, 2]
  rows = corners[..., 0, None] + np.arange(p)                                    # [B, 2, p]
  cols = corners[..., 1, None] + np.arange(p)
  patches = images[np.arange(b)[:, None, None, None], rows[..., :, None], cols[..., None, :]]
  return patches, label, corners


def drop_channels(patches: np.ndarray, rng: np.random.Generator, mean, noise: float):
  """Colour dropping: every patch keeps one channel (drawn per patch); the other two become the dataset ``mean``
  (in [0, 1]) plus Gaussian noise of ``noise`` times the kept channel's standard deviation in that patch.

  [B, 2, p, p, 3] uint8 -> (the same shape, uint8; the kept channel int [B, 2]).
  """
  b, n = patches.shape[:2]
  keep = rng.integers(0, 3, size=(b, n))
  z = rng.normal(size=patches.shape)
  x = patches.astype(np.float32)
  kept = np.take_along_axis(x, keep[:, :, None, None, None], axis=-1)            # [B, 2, p, p, 1]
  scale = noise * kept.std(axis=(2, 3, 4), keepdims=True)
  fill = np.asarray(mean, np.float32) * 255.0 + z * scale
  out = np.where(np.arange(3) == keep[:, :, None, None, None], x, fill)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8), keep


def project_green_magenta(patches: np.ndarray) -> np.ndarray:
  """Removes every pixel's component along the green-magenta axis (grey pixels are unchanged): uint8 -> uint8."""
  x = patches.astype(np.float32)
  x = x - (x @ GREEN_MAGENTA.astype(np.float32))[..., None] * GREEN_MAGENTA.astype(np.float32)
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class PairHead(nnx.Module):
  """The two patch features concatenated (centre first) -> [Linear -> ReLU] per hidden size -> Linear(8).

  The last layer starts at zero (every position equally likely: loss log 8), as LinearHead does.
  """

  def __init__(self, patch_features: int, hidden_sizes: tuple[int, ...], num_outputs: int, *, feature: str,
               rngs: nnx.Rngs):
    self.feature = feature
    sizes = (2 * patch_features, *hidden_sizes)
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.out = nnx.Linear(sizes[-1], num_outputs, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

  def __call__(self, features: dict[str, jax.Array]) -> jax.Array:
    h = features[self.feature].astype(jnp.float32)            # [B*2, ...], pair-major
    h = h.reshape(h.shape[0] // 2, -1)                        # [B, 2*D]: centre, then neighbour
    for layer in self.hidden:
      h = jax.nn.relu(layer(h))
    return self.out(h)


@dataclasses.dataclass
class PatchLocation(Task):
  """Classify which of the 8 neighbours of a centre patch the second patch was cut from."""
  mean: float | tuple[float, ...]
  std: float | tuple[float, ...]
  name: str = 'patch_location'
  patch_size: int = 7
  gap: int = 3                      # nominal pixels between neighbouring patches
  jitter: int = 1                   # the neighbour moves up to this many pixels per axis (<= gap: never overlaps)
  canvas_size: int = 0              # > 0: zero-pad each patch, centred, to this square for the backbone
  chroma: str = 'drop'              # colour images: 'drop', 'project' or 'none' (grey images: unchanged)
  drop_noise: float = 0.01          # 'drop': noise std as a fraction of the kept channel's std
  hidden_sizes: tuple[int, ...] = (512, 512)
  feature: str | None = None        # backbone feature of each patch; None: the backbone's output_name

  def __post_init__(self):
    check_choice(self.name, 'chroma', self.chroma, CHROMA)
    if int(self.patch_size) < 1 or int(self.gap) < 0 or int(self.jitter) < 0:
      raise ValueError(f"task '{self.name}': patch_size={self.patch_size} must be >= 1, gap={self.gap} and "
                       f'jitter={self.jitter} >= 0')
    if int(self.jitter) > int(self.gap):
      raise ValueError(f"task '{self.name}': jitter={self.jitter} exceeds gap={self.gap}: the patches could overlap "
                       'and share pixels; keep jitter <= gap')
    if self.canvas_size and int(self.canvas_size) < int(self.patch_size):
      raise ValueError(f"task '{self.name}': canvas_size={self.canvas_size} is smaller than patch_size="
                       f'{self.patch_size} (0: feed the patches as they are)')
    if not np.isfinite(float(self.drop_noise)) or float(self.drop_noise) < 0:
      raise ValueError(f"task '{self.name}': drop_noise={self.drop_noise} must be >= 0")
    try:
      self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
    except (TypeError, ValueError) as e:
      raise ValueError(f"task '{self.name}': hidden_sizes must be a list of layer widths, got "
                       f'{self.hidden_sizes!r}') from e
    if any(h < 1 for h in self.hidden_sizes):
      raise ValueError(f"task '{self.name}': hidden_sizes={self.hidden_sizes} must be positive widths")

  @property
  def num_outputs(self) -> int:
    return len(OFFSETS)

  def geometry(self, image_shape) -> PairGeometry:
    return pair_geometry(image_shape, self.patch_size, self.gap, self.jitter)

  def backbone_input_shape(self, dataset_shape) -> tuple[int, ...]:
    self.geometry(dataset_shape)   # an image too small for the layout is one error, before anything is built
    side = int(self.canvas_size or self.patch_size)
    return (side, side, *dataset_shape[2:])

  def pairs(self, images: np.ndarray, rng: np.random.Generator) -> Batch:
    """``patches`` (after ``chroma``), ``label`` and the patches' ``corners`` (see :func:`cut_pairs`)."""
    patches, label, corners = cut_pairs(images, rng, self.geometry(images.shape[1:]))
    if patches.shape[-1] == 3 and self.chroma == 'drop':
      mean = np.broadcast_to(np.asarray(self.mean, np.float32), (3,))
      patches, _ = drop_channels(patches, rng, mean, float(self.drop_noise))
    elif patches.shape[-1] == 3 and self.chroma == 'project':
      patches = project_green_magenta(patches)
    return {'patches': patches, 'label': label, 'corners': corners}

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    del train  # the pairs are the task, not an augmentation: eval draws them too (from its seeded rng)
    out = self.pairs(batch['image'], rng)
    return {'patches': out['patches'], 'label': out['label'], 'weight': np.asarray(batch['weight'], np.float32)}

  def make_head(self, backbone, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    feature, in_features, _ = head_input(backbone, self.backbone_input_shape(input_shape), self.feature, self.name)
    return PairHead(in_features, self.hidden_sizes, self.num_outputs, feature=feature, rngs=rngs)

  def forward(self, backbone, head, batch: Batch, *, train: bool, rng):
    patches = batch['patches']                                  # [B, 2, p, p, C]
    x = patches.reshape(-1, *patches.shape[2:])                 # [B*2, p, p, C], pair-major
    if self.canvas_size:
      before = (int(self.canvas_size) - x.shape[1]) // 2
      after = int(self.canvas_size) - x.shape[1] - before
      x = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))   # uint8 0: Fashion-MNIST's background
    return head(backbone(normalize(x, self.mean, self.std), train=train, rng=rng))

  def loss(self, logits: jax.Array, batch: Batch):
    labels, weight = batch['label'], batch['weight']
    loss = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), weight)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    metrics = {'loss': loss, 'acc': weighted_mean(correct, weight)}
    for i in range(len(OFFSETS)):  # per position: a mean over that position's pairs
      metrics[f'acc_{i}'] = mean_of(correct, weight * (labels == i))
    return loss, metrics
