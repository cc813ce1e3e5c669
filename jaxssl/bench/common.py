"""What the bench commands share: the loop that times a step (the GPU bench's and the PyTorch twin's; the step
bench alternates two steps and the per-layer bench keeps minima, so theirs differ), and the --json file."""

import time

from jaxssl import runlog


def step_times(step, steps: int, warmup: int) -> list[float]:
  """Seconds of each of ``steps`` calls of ``step`` (which returns when its step is done), after ``warmup``
  untimed calls."""
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  return times


def write_json(path: str, rows: list[dict]) -> None:
  """All of a command's rows, which it has printed one JSON line each, as one file ('' writes none)."""
  if path:
    runlog.write_json(path, rows)
