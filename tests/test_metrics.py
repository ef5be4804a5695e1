"Metric edge cases against hand-computed values."

import numpy as np
import pytest
import torch

from ris_nb.distributed import reduce_across_ranks
from ris_nb.metrics import RISMetrics, metrics_from_sums, resize_gt_square, resize_prob


def test_hand_computed_oiou_miou():
    m = RISMetrics()
    m.update_iu([9000, 10], [10000, 100])
    r = m.compute()
    assert r["oIoU"] == pytest.approx(100 * 9010 / 10100)
    assert r["mIoU"] == pytest.approx(50.0)
    assert (r["P@0.5"], r["P@0.6"], r["P@0.9"], r["n"]) == (50.0, 50.0, 50.0, 2)


def test_empty_prediction_and_empty_gt():
    m = RISMetrics()
    ious = m.update(np.zeros((2, 5, 5), bool), np.stack([np.zeros((5, 5)), np.ones((5, 5))]).astype(np.uint8))
    assert ious.tolist() == [0.0, 0.0]  # empty union counts 0; empty prediction counts 0
    r = m.compute()
    assert r["oIoU"] == 0.0 and r["mIoU"] == 0.0 and r["n"] == 2


def test_all_ones_and_numpy_torch_agree():
    p = np.ones((3, 1, 6, 6), np.float32)
    g = np.ones((3, 6, 6), bool)
    a, b = RISMetrics(), RISMetrics()
    a.update(p, g)
    b.update(torch.from_numpy(p), torch.from_numpy(g))
    assert a.compute() == b.compute()
    assert a.compute()["P@0.9"] == 100.0 and a.compute()["oIoU"] == 100.0


def test_threshold_is_inclusive():
    m = RISMetrics()
    m.update(torch.tensor([[[0.5, 0.4999]]]), torch.tensor([[[True, False]]]))
    assert m.ious.tolist() == [1.0]
    m = RISMetrics()
    m.update_iu([8, 9], [10, 10])
    r = m.compute()
    assert r["P@0.8"] == 100.0 and r["P@0.9"] == 50.0


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError) as e:
        RISMetrics().update(torch.ones(2, 4, 4), torch.ones(2, 4, 5))
    assert "(2, 4, 4)" in str(e.value) and "(2, 4, 5)" in str(e.value)


def test_non_binary_ground_truth_rejected():
    with pytest.raises(ValueError, match="binary"):
        RISMetrics().update(torch.ones(1, 2, 2), torch.tensor([[[0, 1], [2, 1]]]))
    with pytest.raises(ValueError, match="binary"):
        RISMetrics().update(torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.5))


def test_protocol_helpers():
    gt = torch.zeros(40, 60, dtype=torch.bool)
    gt[5:25, 10:50] = True
    sq = resize_gt_square(gt, 20)
    assert sq.shape == (20, 20) and sq.dtype == torch.bool
    up = resize_prob(sq.float(), (40, 60))
    assert up.shape == (40, 60)
    assert resize_prob(torch.rand(2, 1, 8, 8), (16, 12)).shape == (2, 1, 16, 12)


def test_shards_sum_to_whole():
    a, b, whole = RISMetrics(), RISMetrics(), RISMetrics()
    a.update_iu([3, 4], [5, 8])
    b.update_iu([1], [9])
    whole.update_iu([3, 4, 1], [5, 8, 9])
    assert metrics_from_sums(a.sums() + b.sums()) == whole.compute() == reduce_across_ranks(whole)
