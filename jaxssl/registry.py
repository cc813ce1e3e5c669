"""Registries by name: a name maps to a ``'module:Class'`` path, imported when first used (so that a config error
is reported before anything heavy loads); a ``'module:Class'`` path given directly names code outside jaxssl."""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def lookup(kind: str, registry: Mapping[str, str], what: str) -> type:
  """The class ``kind`` names in ``registry`` (or as a ``'module:Class'`` path); one line of error otherwise."""
  path = registry.get(kind, kind if ':' in kind else None)
  if path is None:
    raise ValueError(f"unknown {what} '{kind}'; choose one of: {', '.join(sorted(registry))} (or give a "
                     "'module:Class' path)")
  module, name = path.split(':')
  try:
    return getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"{what} '{kind}': cannot import {path} ({e})") from e
