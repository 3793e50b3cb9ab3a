"""Shared fixtures: tiny victims that keep the suite fast on a 2-core CPU."""

import jax
import pytest

import experiments  # noqa: F401  (sets jax_threefry_partitionable=False, as the scripts do)
from jaxinvert import models


@pytest.fixture(scope="session")
def tiny_lenet():
  model = models.get_model("lenet", num_classes=5, image_size=8, width=3)
  return model, jax.jit(model.init)(jax.random.key(0))
