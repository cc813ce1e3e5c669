"""Seed experiment 003's pretraining: RotNet (4 rotations) on the images of a folder, without their labels;
CifarNet at 64 px. Held-out figure: ``rotation/acc`` on the folder's ``val`` images (chance 25%). Kaggle's Dogs vs.
Cats (https://www.kaggle.com/c/dogs-vs-cats/data, ``train.zip``: 25,000 photos named ``cat.N.jpg`` /
``dog.N.jpg``; unzip so DIR/train/ holds them):

  python -m jaxssl.main --config configs/folder_rotation.py --workdir runs/catsdogs_rotation \\
      --config.data.source_dir=DIR

then the label-volume study from that backbone (configs/folder_label_volumes.py):

  python -m jaxssl.study --config configs/folder_label_volumes.py --workdir runs/catsdogs_volumes \\
      --config.data.source_dir=DIR --config.study.inits.rotation=runs/catsdogs_rotation

Any labelled folder works the same way (class folders or ``<label>.<id>.jpg`` names). Without one at hand,
``:sample`` makes a Kaggle-style folder of 357 real photos (configs/folder_common.py) and ``:sample,quick`` looks
at the whole sequence in minutes:

  python -m jaxssl.main --config configs/folder_rotation.py:sample,quick --workdir /tmp/folder_rotation
  python -m jaxssl.study --config configs/folder_label_volumes.py:sample,quick --workdir /tmp/folder_volumes \\
      --config.study.inits.rotation=/tmp/folder_rotation

Expected: Dogs vs. Cats not measured here (no copy on this machine); sample,quick: see docs/results.md
("Seed 003 on an image folder").

Arguments: ``VARIANT[,quick]`` with VARIANT ``folder`` (default) or ``sample``; ``quick``: 32 px, 150 steps.
"""

import ml_collections

from configs import common, folder_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """RotNet on the folder (``sample``: the generated sample folder; ``quick``: a look in minutes)."""
  a = folder_common.parse(arg)
  c = folder_common.base_config(a.variant, a.quick)
  c.tasks.rotation = ml_collections.ConfigDict({'angles': (0, 90, 180, 270)})
  c.optim.lr = 0.02            # as configs/fmnist_rotation.py: 0.05 stalls RotNet at chance
  c.optim.warmup_epochs = 0.5
  c.num_epochs = 30.0
  c.eval_every = 1000
  c.checkpoint_every = 500
  if a.variant == 'sample':    # 287 training photos: 4 steps of 64 per epoch
    c.num_epochs = 100.0
    c.eval_every = c.checkpoint_every = 100
  if a.quick:
    common.make_quick(c, train_limit=0, eval_limit=0, batch_size=32, total_steps=150, eval_every=50)
  return c
