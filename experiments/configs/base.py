"""Defaults shared by every reconstruction config; each field is documented here.

Not a runnable config itself: `lenet_b1.py` and the others start from
`get_config()` and change what they need. Override any field on the command line:
``--config.batch_size=4``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Victim.
  c.model = "lenet"            # lenet | convnet | resnet18 | resnet50
  c.width = 0                  # 0 = the paper's width (12 LeNet, 64 others)
  c.activation = ""            # '' = the paper's (sigmoid LeNet, relu others)
  #                              | relu | sigmoid | softplus
  c.batchnorm = True           # ConvNet only
  c.hidden = 0                 # ConvNet only: dense units before the classifier
  c.conv_impl = ""             # '' = per backend (xla on TPU, else matmul_dw) | xla | matmul_dw
  c.victim_checkpoint = ""     # '' = untrained (fresh init); else a train_victim checkpoint dir
  c.victim_step = -1           # checkpoint step; -1 = latest
  # Data.
  c.dataset = "photos"         # photos (offline) | cifar10 | cifar100 | imagenet2012
  c.data_dir = ""              # prepared TFDS data (never downloaded)
  c.image_size = 32
  c.num_classes = 0            # 0 = the dataset's
  c.head_classes = 0           # victim's outputs; 0 = num_classes
  #                              (more: a wider head, e.g. 1000 over photos' 20)
  c.batch_size = 1
  c.label_dist = "unique"      # unique | random | single:r | factor:r | repeat
  c.seed = 0
  # What the client shares.
  c.setting = "fedsgd"         # fedsgd | fedavg
  c.local_epochs = 1           # fedavg
  c.local_batch_size = 0       # fedavg; 0 = the whole batch
  c.local_lr = 0.1             # fedavg
  c.client_shuffles = False    # fedavg: the client shuffles at every epoch (else in order)
  c.fedavg_method = "unroll"   # unroll (simulate local training) | approx (update / (lr x steps))
  c.fedavg_order = "known"     # known | random (fresh order per step) | average (mean over orders)
  c.fedavg_order_samples = 2   # orders averaged by fedavg_order=average
  c.remat = False              # jax.checkpoint on each simulated local step
  c.scan_unroll = 0            # local steps per lax.scan iteration; 0 = all on CPU, 1 elsewhere
  # Labels.
  c.label_source = "restored"  # restored (from the update) | true (oracle) | given
  c.labels = ""                # label_source=given: comma-separated labels
  c.wrong_labels = 0           # label_source=true: this many true labels changed to another
                               # class (Geng et al.'s one-wrong-label finding; data.mislabel)
  c.label_method = "auto"      # auto | a method of jaxinvert.labels
  c.hypotheses = 1             # count vectors tried: all where at most H exist, else the top H
  c.label_arrangements = 1     # fedavg, known order: mini-batch placements tried per count vector
  # Attack.
  c.iterations = 2000
  c.restarts = 1
  c.optimizer = "lbfgs"        # lbfgs | adam | signed_adam
  c.lr = 0.1                   # adam / signed_adam
  c.distance = "l2"            # l2 | cosine
  c.box = "none"               # none | clip | sigmoid
  c.init = "uniform"           # uniform | gaussian
  c.tv = 0.0                   # total-variation weight
  c.tv_kind = "anisotropic"    # anisotropic | isotropic
  c.bn = 0.0                   # BatchNorm-statistics weight (models with BatchNorm)
  c.group = 0.0                # group-consistency weight (restarts > 1)
  # Execution.
  c.strategy = ""              # '' = per backend | vmap | map | host_loop | sharded
  c.steps_per_call = 0         # steps fused per jitted call; 0 = runner.default_steps_per_call
  c.log_every = 100
  c.checkpoint_every = 0       # 0 = no attack checkpoints
  c.patience = 0               # 0 = off; else stop after this many stagnant log_every chunks
  c.tol = 1e-4
  c.progress = True
  c.distributed = False        # call jax.distributed.initialize (multi-host)
  c.coordinator_address = ""   # multi-host without auto-detection (TPU, Slurm, MPI detect it)
  c.num_processes = 0          # 0 = auto-detect
  c.process_id = -1            # -1 = auto-detect
  # Sweeps (experiments/sweep.py).
  c.cells = ""                 # ';'-separated cells of 'field=value,field=value'
  c.sweep_x = ""               # x-axis field of the sweep plot ('' = bars per cell)
  c.sweep_series = ""          # one line per value of this field
  return c
