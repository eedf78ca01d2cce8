"""Plotly.js' cartesian bundle: fetched once from a registry (a real HTTP server on loopback
here), checked against its pinned digest, and holding every trace type the page draws."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import io
import re
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import plotly.graph_objects as go
import pytest
from plotly.basedatatypes import BaseTraceType

from dashboard import livechart, plotlybundle
from dashboard.plotlybundle import CARTESIAN, Bundle, BundleError

DASHBOARD = Path(plotlybundle.__file__).parent
SCRIPT = b"/* a Plotly.js bundle */ window.Plotly = {};\n"


def tarball_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def pinned(bundle: Bundle, tarball: bytes) -> Bundle:
    """`bundle` pinned to `tarball`'s digest, as npm's registry states it."""
    digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    return dataclasses.replace(bundle, integrity=f"sha512-{digest}")


@pytest.fixture
def published() -> bytes:
    """The npm tarball of a small stand-in for the bundle."""
    return tarball_of({"package/package.json": b"{}", f"package/{CARTESIAN.file}": SCRIPT})


@pytest.fixture
def registry(published: bytes) -> Iterator[tuple[str, list[str]]]:
    """A registry on loopback that serves `published` at the bundle's npm path: its URL and
    the paths it was asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            found = self.path == f"/{CARTESIAN.tarball}"
            self.send_response(200 if found else 404)
            self.end_headers()
            if found:
                self.wfile.write(published)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    server.shutdown()
    server.server_close()


def test_fetched_once_checked_and_written(
    registry: tuple[str, list[str]], published: bytes, tmp_path: Path
) -> None:
    url, asked = registry
    bundle = pinned(CARTESIAN, published)
    target = tmp_path / "share" / "bundle.js"
    assert plotlybundle.fetch(bundle, target, url.rstrip("/")) == target
    assert target.read_bytes() == SCRIPT
    assert plotlybundle.fetch(bundle, target, url) == target
    assert asked == [f"/{CARTESIAN.tarball}"], "the second call found the file"


def test_a_download_that_does_not_match_its_digest_is_refused(
    registry: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = registry
    target = tmp_path / "bundle.js"
    refused = r"plotly.js-cartesian-dist-min 4.1.1: the download's sha512 is .*, expected"
    with pytest.raises(BundleError, match=refused):
        plotlybundle.fetch(CARTESIAN, target, url)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_registry_without_the_package_is_named(
    registry: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = registry
    missing = r"could not fetch http://127.0.0.1:\d+/other/plotly.js-cartesian.*: Not Found"
    with pytest.raises(BundleError, match=missing):
        plotlybundle.fetch(CARTESIAN, tmp_path / "bundle.js", url + "other")


def test_an_unreachable_registry_is_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"could not fetch http://127.0.0.1:9/.*: .*refused"):
        plotlybundle.fetch(CARTESIAN, tmp_path / "bundle.js", "http://127.0.0.1:9")


def test_a_tarball_without_the_script_is_refused() -> None:
    tarball = tarball_of({"package/package.json": b"{}"})
    with pytest.raises(BundleError, match=f"no file package/{re.escape(CARTESIAN.file)} inside"):
        plotlybundle.script_from(tarball, CARTESIAN)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "https://registry.npmjs.org"),
        ({"npm_config_registry": "https://npm.example.org/"}, "https://npm.example.org"),
        ({"NPM_CONFIG_REGISTRY": "http://10.0.0.5:4873"}, "http://10.0.0.5:4873"),
        ({"npm_config_registry": ""}, "https://registry.npmjs.org"),
    ],
)
def test_registry_url_follows_npms_setting(environ: dict[str, str], expected: str) -> None:
    assert plotlybundle.registry_url(environ) == expected


def test_the_page_serves_the_bundle_only_with_the_plotly_it_was_made_for(tmp_path: Path) -> None:
    prefix = str(tmp_path)
    assert plotlybundle.installed(CARTESIAN, prefix) is None, "not fetched"
    path = plotlybundle.bundle_path(CARTESIAN, prefix)
    path.parent.mkdir(parents=True)
    path.write_bytes(SCRIPT)
    assert plotlybundle.installed(CARTESIAN, prefix) == path
    other = dataclasses.replace(CARTESIAN, version="3.0.0")
    plotlybundle.bundle_path(other, prefix).write_bytes(SCRIPT)
    assert plotlybundle.installed(other, prefix) is None, "another Plotly.js than plotly's"


def test_this_environment_has_the_bundle_and_the_page_serves_it() -> None:
    """scripts/setup.sh fetched it (without it the first chart comes later)."""
    path = plotlybundle.installed()
    assert path is not None, "run `python -m dashboard.plotlybundle` (scripts/setup.sh does)"
    assert livechart.plotly_source() == path
    registered = set(plotlybundle.TRACE_PATTERN.findall(path.read_bytes()))
    assert {name.decode() for name in registered} == CARTESIAN.traces


def trace_types_in_the_dashboard() -> set[str]:
    """Every trace type the dashboard's code names: as a graph_objects class or as a trace
    dict's "type"."""
    classes = [getattr(go, name) for name in dir(go)]
    all_traces = {
        value.__name__.lower()
        for value in classes
        if isinstance(value, type) and issubclass(value, BaseTraceType)
    }
    named: set[str] = set()
    for module in DASHBOARD.rglob("*.py"):
        source = module.read_text()
        named |= {name.lower() for name in re.findall(r"\bgo\.(\w+)\(", source)}
        named |= set(re.findall(r'"type":\s*"(\w+)"', source))
    return named & all_traces


def test_every_trace_type_the_page_draws_is_in_the_bundle() -> None:
    used = trace_types_in_the_dashboard()
    assert {"scatter", "heatmap"} <= used
    assert used <= CARTESIAN.traces, f"not in {CARTESIAN.package}: {used - CARTESIAN.traces}"
