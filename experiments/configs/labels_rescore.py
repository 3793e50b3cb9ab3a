"""Label counts re-scored by the attack's matching loss, on trained small heads.

Command (the table in docs/labels.md, "Re-scoring by the attack"):
  python -m experiments.rescore_labels --config=experiments/configs/labels_rescore.py \
      --workdir=workdirs/labels_rescore
The victim is `labels_heads.py`'s ConvNet w16 after 100 SGD steps, where SELECT is exact
in few batches of several images per class. Per batch the attack of `convnet_b8.py`
(cosine matching, TV, signed Adam, 200 steps here) runs once per candidate count vector
(every vector where there are at most `hypotheses`, else SELECT's top `hypotheses`) and
the lowest final matching loss answers. About 48 minutes on a 2-core CPU (8 batches of 5
candidates, then 8 of 15). Vary --config.train_steps, --config.cells,
--config.iterations, --config.model. Measured (docs/labels.md): the attack picks the
truth in 8 of 8 batches on 2 classes (also on ResNet-18; 6 of 8 with 8 images, where
SELECT gets 1), but in 2 of 8 on 3 classes (also at 600 steps and on ResNet-18), 2 of 4
on 5 and 4 of 8 on 10, below SELECT's 4 and 7 there: a wrong count vector often matches
better.
"""

from experiments.configs import convnet_b8, labels


def get_config():
  c = labels.get_config()
  attack = convnet_b8.get_config()
  for field in ("optimizer", "lr", "distance", "box", "tv", "bn"):
    c[field] = attack[field]
  c.model = "convnet"
  c.width = 16
  c.train_steps = 100
  c.trials = 8
  c.iterations = 200
  c.log_every = 200
  c.hypotheses = 16           # every count vector up to 16 of them, else SELECT's top 16
  c.cells = ";".join(["num_classes=2,batch_size=4,label_dist=random",
                      "num_classes=3,batch_size=4,label_dist=random"])
  return c
