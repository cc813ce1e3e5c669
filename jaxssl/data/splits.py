"""Split names every dataset shares: ``data.eval_split='holdout'`` is not a split of the dataset's files but the
class-stratified part of ``train_split`` that ``data.holdout_fraction`` holds out of training (jaxssl/data/subsets.py
``load_sources``): validation images carved from the training images, for choices never made on the test split."""

HOLDOUT_SPLIT = 'holdout'


def split_keys(data_cfg) -> tuple[str, ...]:
  """The data keys naming a split of the dataset's files (eval_split 'holdout' is carved from train_split)."""
  return ('train_split',) if data_cfg.get('eval_split') == HOLDOUT_SPLIT else ('train_split', 'eval_split')
