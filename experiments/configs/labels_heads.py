"""Label restoration on small heads: 2 to 5 and 10 classes (CIFAR-10's N), every method.

The other label configs use all 20 photo classes; a 2-class task (a binary medical
classifier, say) or CIFAR-10 has fewer, and rules that hold at N = 20 need not hold there
(docs/labels.md, "Small heads").

Command (the table in docs/labels.md):
  python -m experiments.restore_labels --config=experiments/configs/labels_heads.py \
      --workdir=workdirs/labels_heads
  (also --config.model=lenet --config.width=0; --config.model=resnet18;
   --config.train_steps=100 or 1000)
Cells (B = batch size):
- N=2: B=4-32 i.i.d.; one class (B=8); 7 + 1 and 15 + 1 images.
- N=3 and 4: B=4-32 i.i.d.; one class (B=8); one class 6 times and two singles (N=3),
  5 times and three singles (N=4); 3 classes x 3 (N=3), 4 x 2 (N=4).
- N=5: B=4-32 i.i.d.; 5 + 3 singles; one class; 5 classes x 2.
- N=10: B=8-64 i.i.d.; 12 + 4 singles; one class; 5 classes x 4 and 4 x 2.
The victim has the cell's N outputs and is trained on the first N photo classes. 16
trials per cell (about 10 minutes on a 2-core CPU, ConvNet, untrained).
"""

from experiments.configs import labels


def get_config():
  c = labels.get_config()
  c.trials = 16
  cells = []
  for num_classes, specs in (
      (2, ["4,random", "8,random", "16,random", "32,random", "8,repeat", "8,single:7",
           "16,single:15"]),
      (3, ["4,random", "8,random", "16,random", "32,random", "8,repeat", "8,single:6",
           "9,factor:3"]),
      (4, ["4,random", "8,random", "16,random", "32,random", "8,repeat", "8,single:5",
           "8,factor:2"]),
      (5, ["4,random", "8,random", "16,random", "8,single:5", "8,repeat", "10,factor:2",
           "32,random"]),
      (10, ["8,random", "16,random", "32,random", "64,random", "16,single:12", "16,repeat",
            "20,factor:4", "8,factor:2"])):
    for spec in specs:
      batch, dist = spec.split(",")
      cells.append(f"num_classes={num_classes},batch_size={batch},label_dist={dist}")
  c.cells = ";".join(cells)
  return c
