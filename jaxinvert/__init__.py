"""jaxinvert: data-reconstruction (gradient inversion) attacks on federated learning, in JAX.

Data flow: `models` / `data` -> `victim` (what a client shares) -> `labels` (zero-shot
label counts) -> `attack` + `runner` (image reconstruction over restarts x label
hypotheses) -> `metrics` (the only module that sees ground truth).
"""

from jaxinvert import attack
from jaxinvert import data
from jaxinvert import labels
from jaxinvert import metrics
from jaxinvert import models
from jaxinvert import objectives
from jaxinvert import priors
from jaxinvert import runner
from jaxinvert import simulators
from jaxinvert import victim
from jaxinvert.attack import Attack, AttackState, matching_attack, make_optimizer
from jaxinvert.runner import RunResult, Strategy, run
from jaxinvert.types import Model

__version__ = "0.1.0"

__all__ = [
    "Attack", "AttackState", "Model", "RunResult", "Strategy", "attack", "data", "labels",
    "make_optimizer", "matching_attack", "metrics", "models", "objectives", "priors", "run",
    "runner", "simulators", "victim",
]
