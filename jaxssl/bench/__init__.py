"""Speed measurements, one command per module (each defines its flags only when run, so all import together):

  python -m jaxssl.bench --config CONFIG      # a config's train step, pipeline and FLOPs (step.py)
  python -m jaxssl.bench.ops                 # convolution layers' passes, XLA against jaxssl's paths (ops.py)
  python -m jaxssl.bench.gpu --batch_dir=DIR # ResNet-18 rotation step on a GPU against PyTorch's (gpu.py)
  python -m jaxssl.bench.cells --config CONFIG  # a benchmark's small cells as one vmapped group (cells.py)

torch_twin.py holds the PyTorch twins of the models and step that the benches compare against (torch is never
required: the benches say so and carry on without it).
"""
