"""MMD² from one pooled distance matrix (issue 21, P8) against the frozen four-cdist version
(benchmarks.reference.old_mmd2)."""

import pytest
import torch

from benchmarks.reference import old_mmd2
from tc.core.consistency import mmd2


@pytest.mark.parametrize(("n", "m", "dim"), [(3, 2, 1), (20, 31, 5), (300, 200, 64), (150, 150, 8)])
@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_mmd2_equals_the_four_cdist_version(n, m, dim, shift):
    g = torch.Generator().manual_seed(n + m + dim)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = torch.randn(m, dim, generator=g, dtype=torch.float64) * 1.3 + shift
    value, h = mmd2(x, y)
    old_value, old_h = old_mmd2(x, y)
    assert h == old_h  # the same pooled distance matrix, the same median
    assert value == pytest.approx(old_value, abs=1e-12, rel=1e-12)
    value, h = mmd2(x.float(), y.float(), bandwidth=0.9)  # a given bandwidth; float32 inputs
    assert h == 0.9 and value == pytest.approx(old_mmd2(x.float(), y.float(), 0.9)[0], abs=1e-12, rel=1e-12)


def test_mmd2_of_feature_maps_flattens_them():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, 3, 3, generator=g), torch.randn(30, 4, 3, 3, generator=g)
    assert mmd2(x, y)[0] == pytest.approx(old_mmd2(x, y)[0], abs=1e-12)
