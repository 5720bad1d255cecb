"""Sizes (``12GiB``) and image shapes (``480x640``), parsed and formatted."""

from __future__ import annotations

import pytest

from autotune.units import format_bytes, parse_image_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12GiB", 12 * 1024**3),
        ("800MiB", 800 * 1024**2),
        ("1.5 GiB", int(1.5 * 1024**3)),
        ("2GB", 2 * 10**9),
        ("4096", 4096),
    ],
)
def test_sizes_parse_binary_and_decimal_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12 parsecs", "GiB", "-3GiB", "0GiB", "1e3GiB", "twelve"])
def test_malformed_sizes_are_rejected_with_the_value_named(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_image_sizes_parse_as_height_by_width() -> None:
    assert parse_image_size("480x640") == (480, 640)
    assert parse_image_size(" 96X128 ") == (96, 128)
    for bad in ("480", "480x", "0x640", "480x-1", "axb", "480x640x3"):
        with pytest.raises(ValueError, match="image size"):
            parse_image_size(bad)


def test_format_bytes_uses_binary_units() -> None:
    assert format_bytes(1536 * 1024**2) == "1.50 GiB"
    assert format_bytes(512) == "512 B"
