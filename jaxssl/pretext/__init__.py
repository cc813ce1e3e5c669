"""Pretext tasks (rotation, jigsaw): tasks that make their own labels from the images."""

from __future__ import annotations

from jaxssl.models import feature_shapes


def checked_feature_shapes(backbone, input_shape, task_name: str) -> dict[str, tuple[int, ...]]:
  """:func:`feature_shapes` of ``backbone`` on ``input_shape``, or a clear error where the backbone cannot take
  that size (CifarNet's fc layers fix the input size it was built for; global-pooled ResNets take any)."""
  try:
    return feature_shapes(backbone, tuple(input_shape))
  except Exception as e:  # pylint: disable=broad-except  (a shape error from deep inside the backbone)
    raise ValueError(
        f"task '{task_name}' feeds the backbone {type(backbone).__name__} inputs of shape {tuple(input_shape)}, "
        f'which it was not built for ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Tasks sharing a '
        'backbone whose layers depend on the input size (cifarnet) must all feed it the same size: choose '
        'options that agree, or a global-pooled backbone (resnet20, resnet18_cifar, ...).') from e
