"""The compressed copy of Plotly.js the page loads: one per Plotly file, whatever the
environment it came from."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from dashboard.livechart import (
    ASSET_DIR,
    CACHE_SUBDIR,
    PLOTLY_JS,
    PLOTLY_PACKAGE,
    compressed_plotly_js,
)


def test_two_environments_with_the_same_plotly_share_one_compressed_copy(tmp_path: Path) -> None:
    """A new virtualenv's plotly.min.js has a new change time, not new bytes."""
    original = PLOTLY_PACKAGE / ASSET_DIR / PLOTLY_JS
    first, second = tmp_path / "env1.js", tmp_path / "env2.js"
    shutil.copyfile(original, first)
    shutil.copyfile(original, second)
    os.utime(second, (1, 1))
    cache = tmp_path / "cache"
    served = compressed_plotly_js(cache, first)
    assert compressed_plotly_js(cache, second) == served
    assert list((cache / CACHE_SUBDIR).iterdir()) == [served]
    assert gzip.decompress(served.read_bytes()) == original.read_bytes()
    changed = tmp_path / "patched.js"
    changed.write_bytes(original.read_bytes() + b"\n")
    assert compressed_plotly_js(cache, changed) != served, "new bytes, a new name"
