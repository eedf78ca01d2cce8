"""Plotly.js' cartesian bundle: the part of Plotly.js the page's charts use, a third of it.

The plotly package ships one Plotly.js, the full bundle (4.8 MB of JavaScript: 3-D, maps,
tables and 40 trace types). The page draws only scatter lines and heatmaps, and a browser
spends most of the time to the page's first chart compiling Plotly.js (docs/performance.md).
Plotly publishes partial bundles of each release on the npm registry; the cartesian one
(1.5 MB) holds every trace type of the page's charts (TRACES). `scripts/setup.sh` fetches
it into the environment once (`python -m dashboard.plotlybundle`): the same release as the
installed plotly package's Plotly.js, checked against the digest pinned here, no Node.js
needed. Without it (no registry reachable, or another plotly installed) the page serves the
package's full bundle, as before: slower to the first chart, the same charts.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from plotly.offline import get_plotlyjs_version

from runformat import PROJECT, write_bytes_atomic


@dataclass(frozen=True)
class Bundle:
    """One release of one of Plotly's npm bundles, pinned by its registry digest."""

    package: str
    version: str
    file: str
    integrity: str
    traces: frozenset[str]

    @property
    def tarball(self) -> str:
        """The package's path under a registry (npm's layout)."""
        return f"{self.package}/-/{self.package}-{self.version}.tgz"


CARTESIAN: Final = Bundle(
    package="plotly.js-cartesian-dist-min",
    version="4.1.1",
    file="plotly-cartesian.min.js",
    integrity="sha512-o8GrFeusncwBIxbBynRJpY4pkgVB6caM+JLpwrLYbbsO7dZ8FJ+SVN2Fr+L7kiG/Z6w4P5O0Jus/Qr5EefHVeg==",
    traces=frozenset(
        {
            "bar",
            "box",
            "contour",
            "heatmap",
            "histogram",
            "histogram2d",
            "histogram2dcontour",
            "image",
            "pie",
            "scatter",
            "scatterternary",
            "violin",
        }
    ),
)
DEFAULT_REGISTRY: Final = "https://registry.npmjs.org"
FETCH_TIMEOUT_S: Final = 60
# How a bundle registers each trace type (read back from the file, in the tests).
TRACE_PATTERN: Final = re.compile(rb'moduleType:"trace",name:"(\w+)"')


class BundleError(Exception):
    """The bundle could not be fetched or did not match its pinned digest."""


def bundle_path(bundle: Bundle = CARTESIAN, prefix: str = sys.prefix) -> Path:
    """Where the environment keeps the bundle: <env>/share/tfcluster/<package>-<version>.js
    (beside the plotly package it goes with, not in a cache: it cannot be rebuilt offline)."""
    return Path(prefix) / "share" / PROJECT / f"{bundle.package}-{bundle.version}.js"


def registry_url(environ: Mapping[str, str] = os.environ) -> str:
    """The npm registry to fetch from: npm's own setting (npm_config_registry) if given."""
    given = environ.get("npm_config_registry") or environ.get("NPM_CONFIG_REGISTRY")
    return (given or DEFAULT_REGISTRY).rstrip("/")


def matches_installed_plotly(bundle: Bundle = CARTESIAN) -> bool:
    """Whether the bundle is the release of Plotly.js that the plotly package ships (its
    figures are written for that release)."""
    return get_plotlyjs_version() == bundle.version


def check_integrity(tarball: bytes, bundle: Bundle) -> None:
    """Raise BundleError unless `tarball` is the one npm's registry lists for the release."""
    algorithm, _, expected = bundle.integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if actual != expected:
        raise BundleError(
            f"{bundle.package} {bundle.version}: the download's {algorithm} is {actual},"
            f" expected {expected}"
        )


def script_from(tarball: bytes, bundle: Bundle) -> bytes:
    """The bundle's JavaScript file out of its npm tarball."""
    member = f"package/{bundle.file}"
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        try:
            extracted = archive.extractfile(member)
        except KeyError:
            extracted = None
        if extracted is None:
            raise BundleError(f"{bundle.package} {bundle.version}: no file {member} inside")
        return extracted.read()


def download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            return bytes(response.read())
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise BundleError(f"could not fetch {url}: {reason}") from error


def fetch(
    bundle: Bundle = CARTESIAN, target: Path | None = None, registry: str | None = None
) -> Path:
    """Fetch the bundle into `target` (default: bundle_path()) unless it is there already,
    checked against its pinned digest and written atomically. BundleError when it cannot."""
    target = target or bundle_path(bundle)
    if target.is_file():
        return target
    tarball = download(f"{registry or registry_url()}/{bundle.tarball}")
    check_integrity(tarball, bundle)
    write_bytes_atomic(target, script_from(tarball, bundle))
    return target


def installed(bundle: Bundle = CARTESIAN, prefix: str = sys.prefix) -> Path | None:
    """The bundle's file if this environment has it and it goes with the installed plotly."""
    path = bundle_path(bundle, prefix)
    return path if path.is_file() and matches_installed_plotly(bundle) else None


def main() -> int:
    """`python -m dashboard.plotlybundle`: fetch the bundle once (scripts/setup.sh)."""
    if not matches_installed_plotly():
        print(
            f"plotly.js bundle: the installed plotly ships Plotly.js {get_plotlyjs_version()},"
            f" the pinned {CARTESIAN.package} is {CARTESIAN.version}: the dashboard serves"
            " plotly's full bundle",
            file=sys.stderr,
        )
        return 1
    try:
        path = fetch()
    except (BundleError, OSError) as error:
        print(
            f"plotly.js bundle: {error}; the dashboard serves plotly's full bundle",
            file=sys.stderr,
        )
        return 1
    print(f"plotly.js bundle: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
