"""The bench's jitter figure: p95 over p50 of each timing against its own image's median."""

from station.commands.bench import same_image_spread


def test_parts_of_different_sizes_are_not_counted_as_jitter():
    # Two parts, one 10x the other's cost, each timed alike every time: the plain p95/p50 is
    # about 10, the station itself does not jitter at all.
    lat = [10.0, 100.0] * 10
    which = [0, 1] * 10
    assert same_image_spread(lat, which) == 1.0


def test_a_stall_on_one_part_shows():
    lat = [10.0] * 18 + [30.0] * 2  # two timings in 20 at three times their image's median
    which = [0] * 20
    assert same_image_spread(lat, which) > 1.5
    assert same_image_spread([10.0] * 20, which) == 1.0


def test_too_few_repeats_give_no_figure():
    assert same_image_spread([10.0, 12.0, 11.0], [0, 1, 2]) is None
    assert same_image_spread([], []) is None
