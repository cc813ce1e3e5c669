"""orbax checkpoints of everything a resumed run needs to continue exactly: train state, run key, and the
grain iterator's position. Saves are asynchronous; orbax commits a step by renaming a finished temporary
directory, so a run killed mid-save (even with kill -9) leaves the previous checkpoint intact."""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


class Checkpointer:
  """A thin layer over ``ocp.CheckpointManager`` that names the items jaxssl saves."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                             create=not read_only, read_only=read_only))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, rng: jax.Array, data_iter=None, meta: dict[str, Any] | None = None,
           *, force: bool = False) -> None:
    items = {'state': ocp.args.StandardSave(state), 'rng': ocp.args.ArraySave(rng),
             'meta': ocp.args.JsonSave(meta or {})}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int | None, state_like, sharding, data_iter=None):
    """Restores ``step`` (None: latest) onto ``sharding``; ``state_like`` gives the tree structure.

    Returns (state, rng, meta); the data iterator, if given, is restored in place.
    """
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(f'no checkpoint {"" if step is None else f"at step {step} "}in {self.directory}; '
                              f'available steps: {self.all_steps() or "none"}')
    items = {'state': ocp.args.StandardRestore(_abstract(state_like, sharding)),
             'rng': ocp.args.ArrayRestore(), 'meta': ocp.args.JsonRestore()}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], restored['rng'], restored['meta']

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
