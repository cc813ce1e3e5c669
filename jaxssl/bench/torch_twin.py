"""The PyTorch side of ``python -m jaxssl.bench``: the same backbone, head, pretext batch and optimizer step,
timed the same way, so the two images/s figures can be compared in one run.

Only imported when torch is installed (``pip install torch==2.13.0`` gets the CPU build); jaxssl never needs
it. Models are written here from their papers, with the shapes of jaxssl's (jaxssl/models): CifarNet (5x5
convs, 3x3/2 max pools, fc 384 and 192) and the CIFAR-style ResNets (3x3 stem, basic blocks, projection
shortcuts). PyTorch runs eagerly in channels_last, the layout its CPU convolutions (oneDNN) are fastest in.
``dtype='bfloat16'`` runs the forward pass under ``torch.autocast('cpu', torch.bfloat16)`` (float32 parameters,
bf16 convolutions and matmuls: PyTorch's mixed precision, as jaxssl's ``model.options.dtype`` is flax's).
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from jaxssl.bench import common

SUPPORTED_MODELS = ('cifarnet', 'resnet20', 'resnet18_cifar')
# task kind -> (images fed to the backbone per source image, classes of its head)
SUPPORTED_TASKS = {'rotation': (4, 4), 'classify': (1, 10)}


class CifarNet(nn.Module):
  """jaxssl's CifarNet (jaxssl/models/cifarnet.py) layer for layer, so both frameworks run the same FLOPs."""

  def __init__(self, in_ch: int, hw: int, num_outputs: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, 64, 5, padding=2)
    self.conv2 = nn.Conv2d(64, 64, 5, padding=2)
    self.pool = nn.MaxPool2d(3, 2, padding=1)
    side = -(-(-(-hw // 2)) // 2)
    self.fc1 = nn.Linear(side * side * 64, 384)
    self.fc2 = nn.Linear(384, 192)
    self.head = nn.Linear(192, num_outputs)

  def forward(self, x):
    h = self.pool(torch.relu(self.conv1(x)))
    h = self.pool(torch.relu(self.conv2(h)))
    h = torch.relu(self.fc1(h.flatten(1)))
    return self.head(torch.relu(self.fc2(h)))


class _Block(nn.Module):

  def __init__(self, cin: int, c: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c)
    self.short = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                  if stride != 1 or cin != c else nn.Identity())

  def forward(self, x):
    h = torch.relu(self.bn1(self.conv1(x)))
    return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


class CifarResNet(nn.Module):
  """jaxssl's CIFAR-style ResNets (jaxssl/models/resnet.py): 3x3 stem, basic blocks, global average pool."""

  def __init__(self, in_ch: int, sizes, widths, num_outputs: int):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(in_ch, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
    blocks, cin = [], widths[0]
    for i, (n, c) in enumerate(zip(sizes, widths)):
      for j in range(n):
        blocks.append(_Block(cin, c, 2 if i > 0 and j == 0 else 1))
        cin = c
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(cin, num_outputs)

  def forward(self, x):
    return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def build(model: str, in_ch: int, hw: int, num_outputs: int) -> nn.Module:
  if model == 'cifarnet':
    return CifarNet(in_ch, hw, num_outputs)
  if model == 'resnet20':
    return CifarResNet(in_ch, (3, 3, 3), (16, 32, 64), num_outputs)
  if model == 'resnet18_cifar':
    return CifarResNet(in_ch, (2, 2, 2, 2), (64, 128, 256, 512), num_outputs)
  raise ValueError(f'no PyTorch twin for model {model!r}; have: {", ".join(SUPPORTED_MODELS)}')


DTYPES = ('float32', 'bfloat16')


def make_step(model: str, task: str, batch_size: int, input_shape, *, lr: float = 0.01,
              threads: int | None = None, dtype: str = 'float32', device: str = 'cpu'):
  """One SGD step (forward, cross-entropy, backward, update) on ``batch_size`` source images on ``device``
  ('cpu', or 'cuda' for jaxssl/bench/gpu.py), as a function that returns when the step is done (the loss is
  read back)."""
  if task not in SUPPORTED_TASKS:
    raise ValueError(f'no PyTorch twin for task {task!r}; have: {", ".join(SUPPORTED_TASKS)}')
  if dtype not in DTYPES:
    raise ValueError(f'no PyTorch twin in dtype {dtype!r}; have: {", ".join(DTYPES)}')
  if threads:
    torch.set_num_threads(threads)
  per_image, classes = SUPPORTED_TASKS[task]
  h, w, c = input_shape
  net = build(model, c, h, classes).to(device).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
  gen = torch.Generator().manual_seed(0)
  x = torch.randn(batch_size * per_image, c, h, w, generator=gen).to(device).contiguous(
      memory_format=torch.channels_last)
  y = torch.randint(0, classes, (batch_size * per_image,), generator=gen).to(device)
  loss_fn = nn.CrossEntropyLoss()
  net.train()

  def step() -> float:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
      loss = loss_fn(net(x).float(), y)
    loss.backward()
    opt.step()
    return loss.item()

  return step


def info() -> dict:
  return {'torch': torch.__version__, 'torch_threads': torch.get_num_threads()}


def measure(model: str, task: str, batch_size: int, input_shape, *, steps: int, warmup: int,
            lr: float = 0.01, threads: int | None = None) -> dict:
  """Images/s of the step on its own (``python -m jaxssl.bench`` instead alternates it with jaxssl's)."""
  step = make_step(model, task, batch_size, input_shape, lr=lr, threads=threads)
  step_s = statistics.median(common.step_times(step, steps, warmup + 1))
  return {**info(), 'torch_step_ms_median': round(1e3 * step_s, 2), 'torch_images_per_s': round(batch_size / step_s, 1)}


def _serve(conn, model: str, task: str, batch_size: int, input_shape, dtype: str) -> None:
  """The worker process's loop: build the step, then run one per request until told to stop."""
  try:
    step = make_step(model, task, batch_size, input_shape, dtype=dtype)
    conn.send(info())
    while conn.recv() == 'step':
      conn.send(step())
  finally:
    conn.close()


class StepProcess:
  """The PyTorch step in a process of its own, run one step per call: in one process with JAX, each framework's
  allocations and threads slowed the other's steps (PyTorch's by up to 1.5x on a 2-core VM)."""

  def __init__(self, model: str, task: str, batch_size: int, input_shape, dtype: str = 'float32'):
    import multiprocessing  # pylint: disable=import-outside-toplevel
    ctx = multiprocessing.get_context('spawn')
    self._conn, child = ctx.Pipe()
    self._proc = ctx.Process(target=_serve, args=(child, model, task, batch_size, tuple(input_shape), dtype),
                             daemon=True)
    self._proc.start()
    child.close()
    self.info = self._conn.recv()

  def __call__(self) -> float:
    self._conn.send('step')
    return self._conn.recv()

  def close(self) -> None:
    if self._proc.is_alive():
      self._conn.send('stop')
      self._proc.join(timeout=30)
    self._conn.close()
