import pytest
import torch

from tc.core.corruptions import CORRUPTIONS, corrupt, corrupted_set
from tc.core.data import load_data


@pytest.fixture(scope="module")
def images():
    return load_data("digits").test_x[:64]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_and_grows_with_severity(images, name):
    a, b = corrupt(images, name, 3, seed=1), corrupt(images, name, 3, seed=1)
    assert a.dtype == torch.uint8 and a.shape == images.shape and torch.equal(a, b)
    dist = [(corrupt(images, name, s).float() - images.float()).abs().mean().item() for s in (1, 5)]
    assert 0 < dist[0] < dist[1], dist


def test_random_corruptions_depend_on_the_seed(images):
    assert not torch.equal(corrupt(images, "gaussian_noise", 2, seed=0), corrupt(images, "gaussian_noise", 2, seed=1))


def test_mixed_set_assigns_pairs_round_robin(images):
    x, names, sev = corrupted_set(images, ["contrast", "jpeg"], [1, 5])
    assert names[:4] == ["contrast", "contrast", "jpeg", "jpeg"] and sev[:4] == [1, 5, 1, 5]
    assert torch.equal(x[2::4], corrupt(images[2::4], "jpeg", 1))


def test_bad_names_and_severities_are_rejected(images):
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(images, "jpeg", 6)


@pytest.mark.parametrize(("names", "severities"), [([], [3]), (["jpeg"], []), ([], [])])
def test_an_empty_list_of_corruptions_or_severities_is_refused(images, names, severities):
    # nothing to assign the samples to: the set would be torch.empty_like (uninitialised memory)
    with pytest.raises(ValueError, match="at least one corruption and one severity"):
        corrupted_set(images, names, severities)


def test_every_sample_of_a_mixed_set_is_a_corrupted_image(images):
    # every sample gets a pair, and its image is that pair's corruption (no uninitialised rows); these three
    # corruptions are deterministic per image, so one image alone is the oracle
    x, names, sev = corrupted_set(images[:7], ["contrast", "jpeg", "brightness"], [2])
    assert names == ["contrast", "jpeg", "brightness"] * 2 + ["contrast"] and sev == [2] * 7
    for k in range(7):
        assert torch.equal(x[k : k + 1], corrupt(images[k : k + 1], names[k], sev[k]))
