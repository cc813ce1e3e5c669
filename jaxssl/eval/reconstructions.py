"""Pictures of the dense pretext tasks (autoencoder, inpainting, colorization): people judge these by looking.

At every evaluation, at the end of training and in ``--mode=eval``, the first ``num_images`` images of the eval
split go through each task that draws pictures (a task with ``picture_outputs`` and ``pictures``: see
jaxssl/tasks/autoencoder.py) exactly as the split metrics see them (the eval pipeline's seeded masks and noise),
and one PNG shows, per task, a row for each of its columns: the input as the network saw it, the target, the
output (inpainting adds the input with the output pasted into the hole; colorization shows the grey input, the
target colours and the colourized result). Columns are images.

Files: ``reconstructions_<split>_step<N>.png`` at each evaluation and at the end, where ``reconstructions.png`` is
also written (the latest, beside ``filters.png`` and ``curves.png``). Only process 0 writes; every process takes
part in the forward pass. The same grid goes to TensorBoard, ``reconstructions/<split>`` (runlog.write_image: a
writer of its own, since an evaluator does not hold the trainer's).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import numpy as np

from jaxssl import files, runlog
from jaxssl.eval import plots
from jaxssl.eval.base import Evaluator


def picture_grid(blocks: list[tuple[str, dict[str, np.ndarray]]], path: str, title: str = '',
                 pixels: list | None = None) -> str:
  """A PNG of ``blocks``, (task name, {column name: images [N, H, W, C] in [0, 1]}): one row per (task, column),
  one column per image; greyscale for C = 1, RGB for C = 3. ``pixels``: a list that receives the rendered grid
  (uint8 [H, W, 3]) for TensorBoard."""
  plt = plots.plt
  rows = [(task, name, images) for task, columns in blocks for name, images in columns.items()]
  n = max(len(images) for _, _, images in rows)
  h, w = rows[0][2].shape[1:3]
  scale = 1.3 / max(h, w) * max(min(h, w), 1) if max(h, w) else 1.3
  fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 1.2, scale * len(rows) + 0.6), squeeze=False)
  for r, (task, name, images) in enumerate(rows):
    for c in range(n):
      ax = axes[r, c]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if c < len(images):
        image = np.clip(np.asarray(images[c], np.float32), 0.0, 1.0)
        if image.shape[-1] == 1:
          ax.imshow(image[..., 0], cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest')
        else:
          ax.imshow(image, interpolation='nearest')
      if c == 0:
        ax.set_ylabel(f'{task}\n{name}', fontsize=7)
  if title:
    fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  try:
    files.save_figure(fig, path, dpi=100)
    if pixels is not None:
      fig.canvas.draw()
      pixels.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
  finally:
    plt.close(fig)   # a failed write must not leave the figure open in a long run
  return path


@dataclasses.dataclass
class Reconstructions(Evaluator):
  """The picture grid of every task that draws pictures (module docstring)."""
  at: tuple[str, ...] = ('eval', 'final', 'checkpoint')
  num_images: int = 8
  tasks: tuple[str, ...] = ()     # which tasks; empty: every task that draws pictures

  def __post_init__(self):
    ctx = self.ctx
    if int(self.num_images) < 1:
      raise ValueError(f'evaluator reconstructions: num_images={self.num_images} must be >= 1')
    self._tasks = [t for t in ctx.tasks if t.draws_pictures and (not self.tasks or t.name in self.tasks)]
    self._fns = {t.name: ctx.compile(self._outputs_fn(t), per_example=True) for t in self._tasks}

  @staticmethod
  def _outputs_fn(task):
    def fn(model, batch):
      task_batch = batch[task.name]
      outputs = task.forward(model.backbone, model.heads[task.name], task_batch, train=False, rng=None)
      return task.picture_outputs(outputs, task_batch)
    return fn

  def images(self, state) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(task name, columns) of every task, on the first ``num_images`` eval images (every process calls this)."""
    n = int(self.num_images)
    batches = list(itertools.islice(self.ctx.batches(batch_size=n), 1))
    blocks = []
    for task in self._tasks:
      rows = self.ctx.gather(self._fns[task.name], state, batches, keep=lambda b, t=task: b[t.name]['weight'] > 0,
                             fields=lambda b, t=task: {f'batch/{k}': v for k, v in b[t.name].items()})
      batch = {k[len('batch/'):]: v for k, v in rows.items() if k.startswith('batch/')}
      out = {k: v for k, v in rows.items() if not k.startswith('batch/')}
      blocks.append((task.name, task.pictures(out, batch)))
    return blocks

  def run(self, state, phase: str) -> dict:
    if not self._tasks:
      return {}
    blocks = self.images(state)
    if jax.process_index():
      return {}
    step = int(state.step)
    name = files.basename(files.abspath(self.ctx.workdir))
    title = f'{name}: {self.ctx.eval_split} images, step {step} (rows: input as the network saw it, target, output)'
    pixels = []
    picture_grid(blocks, files.join(self.ctx.workdir, f'reconstructions_{self.ctx.eval_split}_step{step}.png'),
                 title, pixels)
    runlog.write_image(self.ctx.workdir, f'reconstructions/{self.ctx.eval_split}', pixels[0], step)
    if phase == 'final':
      picture_grid(blocks, self.stem('reconstructions', state, phase) + '.png', title)
    return {}
