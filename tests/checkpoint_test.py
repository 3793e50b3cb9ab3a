"""Victim checkpoints (`jaxinvert.checkpoint`): what `train_victim` saves is what the
scripts' ``--config.victim_checkpoint`` loads, and another model is refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from experiments.configs import lenet_b1
from jaxinvert import checkpoint, models


def _convnet(width=2):
  model = models.get_model("convnet", num_classes=4, width=width)
  return model, jax.jit(model.init)(jax.random.key(0))


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def test_round_trip_of_two_steps_with_batch_stats_and_metadata(tmp_path):
  model, start = _convnet()
  later = jax.tree.map(lambda a: a + 1.0, start)  # params and BatchNorm buffers both move
  checkpoint.save_victim(str(tmp_path), 0, start, metadata={"model": "convnet", "width": 2})
  checkpoint.save_victim(str(tmp_path), 5, later, metadata={"model": "convnet", "width": 2})
  assert checkpoint.victim_steps(str(tmp_path)) == [0, 5]
  loaded, meta = checkpoint.load_victim(str(tmp_path), like=model.init(jax.random.key(9)))
  _assert_trees_equal(loaded, later)  # the latest step, in the model's own tree
  assert meta == {"model": "convnet", "width": 2}
  first, _ = checkpoint.load_victim(str(tmp_path), 0, like=start)
  _assert_trees_equal(first, start)
  plain, _ = checkpoint.load_victim(str(tmp_path), 0)  # no `like`: nested dicts
  np.testing.assert_array_equal(plain["batch_stats"]["bn0"]["mean"],
                                start["batch_stats"]["bn0"]["mean"])


def test_missing_checkpoints_and_steps_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no victim checkpoint in"):
    checkpoint.load_victim(str(tmp_path / "nowhere"))
  _, variables = _convnet()
  checkpoint.save_victim(str(tmp_path), 3, variables)
  with pytest.raises(FileNotFoundError, match=r"at step 7 .* steps saved: \[3\]"):
    checkpoint.load_victim(str(tmp_path), 7)


def test_another_model_is_refused_with_the_leaf_and_saved_metadata(tmp_path):
  _, variables = _convnet(width=2)
  checkpoint.save_victim(str(tmp_path), 0, variables, metadata={"width": 2})
  _, wider = _convnet(width=3)
  with pytest.raises(ValueError, match=r"saved \['batch_stats'\]\['bn0'\]\['mean'\] with "
                                       r"shape \(2,\), the model has \(3,\).*'width': 2"):
    checkpoint.load_victim(str(tmp_path), like=wider)
  lenet = models.get_model("lenet", num_classes=4)
  with pytest.raises(ValueError, match="the victim checkpoint at step 0 .* (holds|has no)"):
    checkpoint.load_victim(str(tmp_path), like=lenet.init(jax.random.key(0)))


def test_scripts_load_the_checkpoint_named_in_the_config(tmp_path):
  config = lenet_b1.get_config()
  config.num_classes, config.image_size, config.width = 4, 16, 3
  model, fresh = common.build_victim(config, jax.random.key(0))
  trained = jax.tree.map(lambda a: a * 0.5, fresh)
  checkpoint.save_victim(str(tmp_path), 100, trained)
  config.victim_checkpoint, config.victim_step = str(tmp_path), 100
  _, loaded = common.build_victim(config, jax.random.key(1))
  _assert_trees_equal(loaded, trained)
  logits, _ = model.apply(loaded, jnp.zeros((1, 16, 16, 3)))
  assert logits.shape == (1, 4)
