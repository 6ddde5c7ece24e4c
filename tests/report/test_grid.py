"""Attribution grids (:mod:`simattr.report.grid`), drawn from scikit-learn's bundled digits."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    crc = struct.unpack(">I", data[16 + length : 20 + length])[0]
    assert zlib.crc32(data[12 : 16 + length]) == crc, "corrupt IHDR chunk"
    return struct.unpack(">II", data[16:24])


def test_attribution_grid_is_a_png_of_the_right_size_with_a_red_target_frame(tmp_path, digits):
    import matplotlib.image

    from simattr.report.grid import save_attribution_grid

    train, test = digits
    out = tmp_path / "grid" / "target.png"
    out.parent.mkdir()
    images = train.get_images([0, 1, 2])
    path = save_attribution_grid(
        out, test.get_images([0])[0], "target", images, ["a", "b", "c"], suptitle="top 3"
    )
    assert Path(path) == out
    width, height = _png_size(out.read_bytes())
    # one panel of 1.6 x 2.1 inches per image (target + 3) at 110 dpi
    assert (width, height) == (round(1.6 * 4 * 110), round(2.1 * 110))
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[:2] == (height, width)
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.1) & (pixels[..., 2] < 0.1)
    assert red.sum() > 100, "the target's red frame is missing"
    assert red[:, width // 4 :].sum() == 0, "only the first panel (the target) is framed"
    assert sorted(p.name for p in out.parent.iterdir()) == ["target.png"]  # no temporary left
