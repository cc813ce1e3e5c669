"""torchvision's AlexNet, ResNet-18 and ResNet-50 written in torch with torchvision's module names (so their state
dicts are torchvision's), for tests/test_torchvision_weights.py: torchvision's PyPI wheel is built against CUDA
torch and does not import beside the CPU torch of the `torch` extra. Imported only where torch is installed."""

import safetensors.torch
import torch

nn = torch.nn


class TorchBlock(nn.Module):
  """torchvision's BasicBlock (two 3x3 convolutions, the first strided) or Bottleneck (1x1, strided 3x3, 1x1 to
  4x the width): conv1/bn1, conv2/bn2[, conv3/bn3] and downsample.0/.1."""

  def __init__(self, cin, width, stride, bottleneck):
    super().__init__()
    cout = width * (4 if bottleneck else 1)
    shapes = ([(cin, width, 1, 1), (width, width, 3, stride), (width, cout, 1, 1)] if bottleneck
              else [(cin, width, 3, stride), (width, cout, 3, 1)])
    for i, (a, b, k, s) in enumerate(shapes, 1):
      setattr(self, f'conv{i}', nn.Conv2d(a, b, k, s, k // 2, bias=False))
      setattr(self, f'bn{i}', nn.BatchNorm2d(b))
    self.depth = len(shapes)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else None)

  def forward(self, x):
    h = x
    for i in range(1, self.depth + 1):
      h = getattr(self, f'bn{i}')(getattr(self, f'conv{i}')(h))
      h = torch.relu(h) if i < self.depth else h
    return torch.relu(h + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
  """torchvision's ResNet: conv1/bn1, a 3x3/2 max pool padded by 1, layer1..4, global average pool, fc."""

  def __init__(self, blocks, bottleneck):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512)), 1):
      layer = []
      for j in range(n):
        layer.append(TorchBlock(cin, width, 2 if i > 1 and j == 0 else 1, bottleneck))
        cin = width * (4 if bottleneck else 1)
      setattr(self, f'layer{i}', nn.Sequential(*layer))
    self.fc = nn.Linear(cin, 1000)

  def forward(self, x):
    h = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for i in range(1, 5):
      h = getattr(self, f'layer{i}')(h)
    return self.fc(h.mean(dim=(2, 3)))


def torch_alexnet():
  """torchvision's AlexNet: the same Sequential indices (features.0/3/6/8/10, classifier.1/4/6)."""
  model = nn.Sequential()
  model.features = nn.Sequential(
      nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
      nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
      nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
  model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
  model.flatten = nn.Flatten(1)  # channel-major (C, H, W), as torchvision's torch.flatten(x, 1)
  model.classifier = nn.Sequential(nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(),
                                   nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))
  return model


TORCH = {'alexnet': torch_alexnet, 'resnet18': lambda: TorchResNet((2, 2, 2, 2), False),
         'resnet50': lambda: TorchResNet((3, 4, 6, 3), True)}

def random_torch(name, images, seed=0):
  """The torch network with random weights (He-normal, random biases), random BatchNorm scales and shifts and
  running statistics measured on ``images`` (one pass in training mode, cumulative average), in eval mode."""
  torch.manual_seed(seed)
  model = TORCH[name]()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, nonlinearity='relu')
        if m.bias is not None:
          nn.init.uniform_(m.bias, -0.1, 0.1)
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.uniform_(m.weight, 0.5, 1.5)
        nn.init.normal_(m.bias, 0.0, 0.2)
        m.momentum = None
    model.train()
    model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  return model.eval()


def save(model, path):
  """The state dict into ``path`` (.safetensors, else torch.save), and as numpy arrays."""
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  if str(path).endswith('.safetensors'):
    safetensors.torch.save_file(state, str(path))
  else:
    torch.save(state, str(path))
  return {k: v.numpy() for k, v in state.items()}


def logits(model, images):
  """The torch network's output for NHWC float32 ``images``."""
  with torch.no_grad():
    return model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
