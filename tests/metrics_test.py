import numpy as np
import pytest

from jaxinvert import metrics


def test_psnr_hand_computed():
  a = np.zeros((1, 4, 4, 3), np.float32)
  b = np.full((1, 4, 4, 3), 0.1, np.float32)  # MSE 0.01 -> 20 dB
  np.testing.assert_allclose(metrics.psnr(a, b), [20.0], rtol=1e-5)
  c = a.copy()
  c[0, 0, 0, 0] = 1.0  # MSE 1/48 -> 10 log10(48)
  np.testing.assert_allclose(metrics.psnr(a, c), [10 * np.log10(48)], rtol=1e-5)


def test_integer_images_are_refused_not_scored_on_the_wrong_range():
  a = np.zeros((1, 4, 4, 3), np.uint8)
  for fn in (metrics.psnr, metrics.ssim):
    with pytest.raises(ValueError, match="floats in \\[0, 1\\].*uint8"):
      fn(a, a.astype(np.float32))


def test_ssim_identity_and_degradation():
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(metrics.ssim(a, a), [1.0, 1.0], rtol=1e-5)
  noisy = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1).astype(np.float32)
  assert np.all(np.asarray(metrics.ssim(a, noisy)) < 0.9)


def test_permuted_batch_is_matched_back():
  rng = np.random.default_rng(1)
  originals = rng.uniform(0, 0.9, size=(5, 8, 8, 3)).astype(np.float32)
  perm = np.array([3, 0, 4, 1, 2])
  recon = originals[perm] + 0.01
  matched = metrics.match(recon, originals)
  np.testing.assert_allclose(recon[matched] - 0.01, originals, atol=1e-6)
  report = metrics.reconstruction_report(recon, originals, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
  np.testing.assert_allclose(report["per_image_psnr"], [40.0] * 5, atol=1e-3)


@pytest.mark.parametrize("pred,true,acc,exact", [
    ([1, 1, 2, 3], [1, 2, 2, 3], 0.75, False),
    ([3, 2, 1], [1, 2, 3], 1.0, True),
    ([0, 0, 0, 0], [0, 1, 2, 3], 0.25, False),
    ([5, 5], [5, 5], 1.0, True),
])
def test_label_accuracy_multiset(pred, true, acc, exact):
  assert metrics.label_accuracy(pred, true) == acc
  assert metrics.labels_exact(pred, true) == exact


def test_label_accuracy_refuses_batches_of_different_sizes():
  with pytest.raises(ValueError, match="2 predicted against 3 true"):
    metrics.label_accuracy([0, 1], [0, 1, 1])


def test_counts_to_labels():
  np.testing.assert_array_equal(metrics.counts_to_labels([0, 2, 1]), [1, 1, 2])


def test_blend_finds_a_same_label_pair_fused_and_no_other():
  rng = np.random.default_rng(2)
  originals = rng.uniform(0, 1, size=(4, 8, 8, 3)).astype(np.float32)
  labels = [5, 5, 1, 2]
  exact = metrics.blend(originals, originals, labels)
  assert exact == pytest.approx({"same_label": 0.0, "different_label": 0.0}, abs=1e-9)
  fused = originals.copy()  # images 0 and 1 both come back as 0.4 / 0.6 mixtures, plus noise
  fused[0] = 0.6 * originals[0] + 0.4 * originals[1] + rng.normal(0, 0.05, fused[0].shape)
  fused[1] = 0.6 * originals[1] + 0.4 * originals[0] + rng.normal(0, 0.05, fused[0].shape)
  out = metrics.blend(fused, originals, labels)
  assert out["same_label"] == pytest.approx(0.4, abs=0.02)
  # The control: images 2 and 3 came back exact (t = 0 from them); images 0 and 1 moved
  # away from themselves, which projects onto their segments to 2 and 3 as about
  # 0.4 / 2 = 0.2 (for independent images). Mean over the 10 ordered pairs: 0.08.
  assert 0.04 < out["different_label"] < 0.12
  assert metrics.blend(originals, originals, [0, 1, 2, 3])["same_label"] is None
  with pytest.raises(ValueError, match="disagree"):
    metrics.blend(originals, originals, [0, 1])
