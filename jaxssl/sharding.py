"""The device mesh: one 'data' axis over every device of every process; the batch is split along it and
parameters are replicated. The same code runs on one CPU, 8 fake CPU devices, a GPU or a TPU pod.

A global batch is cut into one chunk of rows per device of the mesh, in mesh order. Each process reads,
transforms and copies only the chunks of its own devices (:class:`BatchLayout`); the pipeline gives each row the
random draws it would get on one device (jaxssl/data/pipeline.py), so 2 processes x 2 devices train on exactly
the batches of 1 process x 4 devices, or of 1 device.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


class MeshError(ValueError):
  """A batch that the devices of the mesh cannot share: one line naming the setting and the values that fit."""


def make_mesh() -> Mesh:
  # Auto axes: the compiler propagates the batch sharding through reshapes (jigsaw tiles, rotations).
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = 'batch_size') -> None:
  if global_batch % mesh.size:
    raise MeshError(f'{what}={global_batch} must be divisible by the {mesh.size} devices of the mesh; set '
                    f'--config.{what} to a multiple of {mesh.size} (e.g. {round_up(global_batch, mesh.size)})')


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class BatchLayout:
  """Where the rows of one global batch lie, seen from this process.

  ``chunks`` are the mesh positions of this process's devices, in the order its host batch holds their rows
  (chunk ``c`` is rows ``[c * chunk_size, (c + 1) * chunk_size)`` of the global batch); ``devices`` are those
  devices, in the same order.
  """
  global_batch: int
  num_chunks: int
  chunks: tuple[int, ...]
  devices: tuple = dataclasses.field(default=(), compare=False, repr=False)

  @property
  def chunk_size(self) -> int:
    return self.global_batch // self.num_chunks

  def rows(self) -> np.ndarray:
    """This process's rows of the global batch, in host-batch order."""
    size = self.chunk_size
    return np.concatenate([np.arange(c * size, (c + 1) * size) for c in self.chunks]) if self.chunks else \
        np.zeros(0, np.int64)


def batch_layout(mesh: Mesh, global_batch: int, what: str = 'batch_size') -> BatchLayout:
  """This process's share of a global batch of ``global_batch`` rows split over ``mesh`` (see the module)."""
  check_batch_size(global_batch, mesh, what)
  size = global_batch // mesh.size
  where = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
  placed = sorted(((index[0].start or 0) // size, device) for device, index in where.items())
  return BatchLayout(global_batch, mesh.size, tuple(c for c, _ in placed), tuple(d for _, d in placed))


def shard_batch(batch, mesh: Mesh):
  """This process's numpy batch (its chunks, :func:`batch_layout`'s order) -> global arrays split over the data
  axis; each chunk is copied to its own device only (no copy between processes)."""
  leaves = jax.tree.leaves(batch)
  if not leaves:
    return batch
  local_rows = len(leaves[0])
  layout = batch_layout(mesh, local_rows * mesh.size // max(1, len(mesh.local_devices)))
  sharding = batch_sharding(mesh)
  size = layout.chunk_size

  def put(x):
    x = np.asarray(x)
    parts = [x[j * size:(j + 1) * size] for j in range(len(layout.devices))]
    arrays = jax.device_put(parts, list(layout.devices))
    return jax.make_array_from_single_device_arrays((layout.global_batch,) + x.shape[1:], sharding, arrays)

  return jax.tree.map(put, batch)
