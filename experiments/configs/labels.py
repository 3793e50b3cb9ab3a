"""Label restoration benchmark, one cell: every method on the same trials.

Command:
  python -m experiments.restore_labels --config=experiments/configs/labels.py \
      --workdir=workdirs/labels
Expected: results.json with, per method, the exact-match rate of the count vector
and the label accuracy over `trials` batches; labels.png compares the methods.
Vary --config.model, --config.batch_size, --config.label_dist, --config.train_steps,
--config.setting=fedavg (with local_epochs / local_batch_size / local_lr).
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.model = "convnet"
  c.width = 16
  c.batch_size = 16
  c.label_dist = "single:8"
  c.trials = 10
  # `fit` is the library's default (labels.DEFAULT_METHOD, results.json's "default"), so it is
  # measured too; where 2K > N it returns select's answer.
  c.methods = "geng,geng_bias,recentred,idlg,gradinversion,llg_plus,ilrg,cluster,select,fit"
  c.num_dummies = 0           # 0 = K dummies (Geng et al.'s code)
  # default: each estimator's own (labels.default_dummies): jittered for recentred, also
  # inside select and fit; U(0, 1) for geng, geng_bias, llg_plus and, on FedSGD, select's
  # geng_bias stand-in (on FedAvg select and fit give jittered dummies to every estimator).
  # Or uniform | gaussian | smooth | jittered for every estimator.
  c.dummy_dist = "default"
  c.fit_space = "subspace"    # fit: subspace | logits (jaxinvert.label_fit.FitSpace)
  c.fit_beyond_half = False   # fedsgd fit also where N/2 < K < N (labels.restore)
  c.fit_margin = 0.0          # fedsgd fit: 0 = off, else labels.restore's fit_margin (>= 1)
  c.fit_support_limit = -1    # fit: -1 = labels.FIT_SUPPORT_LIMIT (fedsgd), 0 (fedavg); 0 = off
  c.stats_point = "trajectory"  # fedavg: start | end | trajectory
  c.speedup = 0.0             # fedavg: labels.restore_fedavg's speedup; 0 = the library's
  c.train_steps = 0           # 0 = untrained victim
  c.train_batch_size = 8
  c.train_lr = 0.01
  c.momentum = 0.9
  c.train_pool = 64
  c.eval_pool = 16
  return c
