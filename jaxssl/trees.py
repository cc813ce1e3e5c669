"""Pytree paths as tuples of strings: one naming for live nnx states, saved checkpoints and optimizer labels."""

from __future__ import annotations

from typing import Any

import jax


def key_name(entry) -> str:
  """One path entry (a dict key, a sequence index, an attribute) as a string."""
  for attr in ('key', 'idx', 'name'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def path_keys(path) -> tuple[str, ...]:
  """A jax key path as strings; a Variable's ``value`` attribute is dropped, so saved trees (where it is a dict
  key) and live nnx.States give the same paths."""
  keys = tuple(key_name(p) for p in path)
  return keys[:-1] if keys and keys[-1] == 'value' else keys


def flat_paths(tree) -> dict[tuple[str, ...], Any]:
  """{path of string keys: leaf} of ``tree`` (see :func:`path_keys`)."""
  return {path_keys(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
