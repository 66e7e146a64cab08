import numpy as np
import pytest

from core.data.rle import RLEError, rle_decode, rle_encode


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (266, 266), (310, 360), (360, 310)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_round_trip_on_random_masks(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    mask = rng.random(shape) < density
    decoded = rle_decode(rle_encode(mask), shape)
    assert decoded.shape == shape
    assert np.array_equal(decoded, mask)


def test_encoding_is_row_major_and_one_indexed():
    mask = np.zeros((3, 4), bool)
    mask[0, 1:3] = True  # flat pixels 1, 2 → start 2, length 2
    mask[2, 0] = True  # flat pixel 8 → start 9, length 1
    assert rle_encode(mask) == "2 2 9 1"
    assert np.array_equal(rle_decode("2 2 9 1", (3, 4)), mask)


def test_non_square_orientation_top_right_corner():
    height, width = 310, 360
    mask = np.zeros((height, width), bool)
    mask[:5, -5:] = True
    decoded = rle_decode(rle_encode(mask), (height, width))
    assert decoded[:5, -5:].all() and decoded.sum() == 25


@pytest.mark.parametrize("rle, message", [
    ("1 2 3", "odd number"),
    ("1 x", "not a whole number"),
    ("0 3", "below 1"),
    ("5 0", "below 1"),
    ("10 5 12 3", "not increasing"),
    ("20 1 5 1", "not increasing"),
])
def test_malformed_rle_is_explained(rle, message):
    with pytest.raises(RLEError, match=message):
        rle_decode(rle, (10, 10))


def test_run_past_the_image_is_an_error():
    with pytest.raises(RLEError, match=r"runs past the image .*100"):
        rle_decode("95 10", (10, 10))


@pytest.mark.parametrize("empty", ["", None, "nan", "  "])
def test_empty_strings_are_empty_masks(empty):
    assert not rle_decode(empty, (4, 6)).any()
