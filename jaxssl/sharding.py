"""The device mesh: one 'data' axis over every device of every process; the batch is split along it and
parameters are replicated. The same code runs on one CPU, 8 fake CPU devices, a GPU or a TPU pod."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh() -> Mesh:
  # Auto axes: the compiler propagates the batch sharding through reshapes (jigsaw tiles, rotations).
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = 'batch_size') -> None:
  if global_batch % mesh.size:
    raise ValueError(f'{what}={global_batch} must be divisible by the {mesh.size} devices of the mesh; '
                     f'set --config.{what} to a multiple of {mesh.size}.')


def shard_batch(batch, mesh: Mesh):
  """This process's numpy batch -> global arrays split over the data axis (no copy between processes)."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
