"""A Plotly chart that keeps the user's zoom and pan while the page redraws it with new points.

``st.plotly_chart`` cannot: Streamlit 1.67 hashes the figure into the element's id, so a live
chart with new points is a new element, the browser draws a new plot and Plotly's
``uirevision`` has nothing to keep (streamlit/streamlit#5107). This is a custom component
(``st.components.v2``): it lives in the page's DOM, stays the same instance across reruns for
the same ``key``, and redraws its one plot with ``Plotly.react``, which keeps whatever the user
zoomed or panned for as long as ``layout.uirevision`` stays the same (the chart builders in
:mod:`dashboard.charts` set it per run, metric and x axis). Plotly's mode bar is there
(zoom, pan, autoscale, PNG); a double click shows everything again.

Plotly.js is the cartesian bundle that ``scripts/setup.sh`` put into the environment
(:mod:`dashboard.plotlybundle`: 1.5 MB, every trace type of the page's charts), else the
installed ``plotly`` package's full bundle (``plotly/package_data/plotly.min.js``, 4.8 MB),
served by the dashboard's own server (no CDN: the machines may have no internet). Streamlit
gzips every response of its component route again at every request (4.8 MB: 1-2 s of server
CPU per page open), except those that are already compressed: so the server compresses the
file once, into the user's cache folder (``~/.cache/tfcluster``, named after Plotly's version
and the file), serves that copy (1.5 MB, read as it is), and the page unpacks it with the
browser's own ``DecompressionStream``. The name changes with the file, so the browser keeps
its copy for good (``fetch(..., {cache: "force-cache"})``: Streamlit's route sends no
validator). Without a writable cache folder the page loads the package's file as before.

The page asks for Plotly.js first thing (:func:`preload_plotly`), so that the browser fetches
and compiles it while the server runs the rest of the script. Every figure of the page goes
through here, the cluster picture included: one ``st.plotly_chart`` would make the browser
load and parse Streamlit's own copy of Plotly.js as well (measured: +2.6 s to the first
chart of the Progress tab).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Final

import plotly
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st
from streamlit.components.v2 import component
from streamlit.components.v2.component_manager import BidiComponentManager
from streamlit.components.v2.get_bidi_component_manager import get_bidi_component_manager
from streamlit.components.v2.manifest_scanner import ComponentConfig, ComponentManifest

from dashboard import plotlybundle
from runformat import PROJECT, user_cache_dir, write_bytes_atomic

# Streamlit serves a component's declared asset folder at
# /_stcore/bidi-components/<project>.<component>/<file>; this "component" is only that folder.
ASSETS_PROJECT: Final = PROJECT
ASSETS_COMPONENT: Final = "plotlyjs"
ASSETS_NAME: Final = f"{ASSETS_PROJECT}.{ASSETS_COMPONENT}"
PLOTLY_PACKAGE: Final = Path(plotly.__file__).resolve().parent
PLOTLY_JS: Final = "plotly.min.js"
ASSET_DIR: Final = "package_data"
# The compressed copy: <cache>/tfcluster/plotlyjs/plotly-<version>-<digest>.min.js.gz
CACHE_SUBDIR: Final = ASSETS_COMPONENT

# Plotly's options for every chart: its mode bar without the lasso and box selections.
CONFIG: Final = {
    "displaylogo": False,
    "showSendToCloud": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
}

LOADER: Final = """
const LOADED = "__tfclusterPlotly";

// A ".gz" copy was compressed once by the server: fetch it as it is (kept in the browser's
// cache for good, its name changes with the file), unpack it here, run it as a script.
async function scriptUrl(src) {
  if (!src.endsWith(".gz")) return src;
  const response = await fetch(src, { cache: "force-cache" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const unpacked = response.body.pipeThrough(new DecompressionStream("gzip"));
  const script = new Response(unpacked, { headers: { "Content-Type": "text/javascript" } });
  return URL.createObjectURL(await script.blob());
}

function loadPlotly(src) {
  if (!window[LOADED]) {
    window[LOADED] = scriptUrl(src)
      .then((url) => new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = url;
        script.onload = () => {
          URL.revokeObjectURL(url);
          resolve(window.Plotly);
        };
        script.onerror = () => reject(new Error("the script did not run"));
        document.head.appendChild(script);
      }))
      .catch((error) => {
        window[LOADED] = undefined;
        throw new Error(`could not load Plotly.js from ${src}: ${error.message}`);
      });
  }
  return window[LOADED];
}
"""

# Only starts loading Plotly.js (the page's first element): nothing to show.
PRELOAD_JS: Final = (
    LOADER
    + """
export default function ({ data }) {
  loadPlotly(JSON.parse(new TextDecoder().decode(data)).plotly).catch(() => {});
}
"""
)

# Draws each chart into the one div it keeps. Colours and font follow the page's theme (the
# CSS variables Streamlit sets on a component), as st.plotly_chart's do: Streamlit's Plotly
# template (its default in a Streamlit server) holds placeholder colours #000001-#000040
# that the page fills in.
JS: Final = (
    LOADER
    + """
function colored(json, style) {
  const css = (name) => style.getPropertyValue(name).trim();
  const list = (name) => css(name).split(",").map((color) => color.trim());
  const palettes = [
    list("--st-chart-categorical-colors"),
    list("--st-chart-sequential-colors"),
    list("--st-chart-diverging-colors"),
  ];
  const text = css("--st-text-color") || "#31333f";
  const background = css("--st-background-color") || "#ffffff";
  return json.replace(/"#0000([0-4][0-9])"/g, (placeholder, digits) => {
    const n = Number(digits) - 1;
    const color = n < 30 ? palettes[Math.floor(n / 10)][n % 10] : n === 37 || n === 39
      ? background : text;
    return color ? `"${color}"` : placeholder;
  });
}

// The figure's own settings win; the theme fills in what it leaves out (as st.plotly_chart).
function under(theme, given) {
  if (given === undefined) return theme;
  const plain = (value) => value && typeof value === "object" && !Array.isArray(value);
  if (!plain(theme) || !plain(given)) return given;
  const merged = { ...theme };
  for (const [name, value] of Object.entries(given)) merged[name] = under(theme[name], value);
  return merged;
}

function themed(layout, style) {
  const css = (name) => style.getPropertyValue(name).trim() || undefined;
  const text = css("--st-text-color");
  const background = css("--st-background-color");
  const family = css("--st-font");
  const grid = css("--st-border-color-light") || css("--st-border-color");
  const axis = (standoff) => ({
    gridcolor: grid, zerolinecolor: grid, linecolor: grid, tickcolor: grid,
    tickfont: { size: 12 }, title: { font: { size: 14 }, standoff }, automargin: true,
  });
  return under({
    font: { color: text, family, size: 12 },
    paper_bgcolor: background,
    plot_bgcolor: background,
    legend: { font: { size: 12 } },
    hoverlabel: { bgcolor: background, bordercolor: grid, font: { color: text, family } },
    margin: { pad: 8 },
    xaxis: axis(12),
    yaxis: axis(16),
  }, layout);
}

export default function ({ data, parentElement }) {
  const style = getComputedStyle(parentElement);
  const spec = JSON.parse(colored(new TextDecoder().decode(data), style));
  let chart = parentElement.querySelector(":scope > .live-chart");
  if (!chart) {
    chart = document.createElement("div");
    chart.className = "live-chart";
    chart.style.width = "100%";
    parentElement.appendChild(chart);
  }
  const layout = themed(spec.figure.layout || {}, style);
  // One drawing at a time per chart, in the order the page sent them.
  chart.drawn = (chart.drawn || Promise.resolve())
    .then(() => loadPlotly(spec.plotly))
    .then((Plotly) => Plotly.react(chart, spec.figure.data || [], layout, spec.config))
    .catch((error) => { chart.textContent = String(error); });
  if (!chart.resizer) {
    chart.resizer = new ResizeObserver(() => {
      if (window.Plotly && chart.classList.contains("js-plotly-plot")) {
        window.Plotly.Plots.resize(chart);
      }
    });
    chart.resizer.observe(chart);
  }
  return () => {
    chart.resizer.disconnect();
    if (window.Plotly) window.Plotly.purge(chart);
  };
}
"""
)

COMPONENT: Final = "tfcluster.live_chart"
_mount = component(COMPONENT, js=JS, isolate_styles=False)
PRELOAD_KEY: Final = "plotly-preload"
# Streamlit marks an element with its key's class: the preload takes no room on the page.
_preload = component(
    "tfcluster.plotly_preload",
    js=PRELOAD_JS,
    css=f".st-key-{PRELOAD_KEY} {{ display: none; }}",
    isolate_styles=False,
)


def compressed_plotly_js(root: Path, source: Path) -> Path:
    """The gzipped copy of the Plotly.js file `source` under `root`, written once (level 6,
    atomically; another Plotly's copy stays for the servers that may still use it). Its name
    holds the plotly package's version and a digest of the file's bytes (5 ms), so a
    browser's cached copy is never stale and every environment with the same file shares one
    copy (a name from the file's change time made a new one per virtualenv). OSError when
    it cannot be written."""
    script = source.read_bytes()
    digest = hashlib.blake2b(script, digest_size=6).hexdigest()
    target = root / CACHE_SUBDIR / f"plotly-{plotly.__version__}-{digest}.min.js.gz"
    if target.is_file():
        return target
    write_bytes_atomic(target, gzip.compress(script, compresslevel=6, mtime=0))
    return target


def plotly_source() -> Path:
    """The Plotly.js the page uses: the cartesian bundle if the environment has it
    (dashboard.plotlybundle: a third of the size, the same charts), else the package's own
    full bundle."""
    return plotlybundle.installed() or PLOTLY_PACKAGE / ASSET_DIR / PLOTLY_JS


@cache
def _served_file() -> Path:
    """The file the page loads: the compressed copy of plotly_source(), else (no writable
    cache folder) the file itself, which Streamlit then gzips at every request."""
    source = plotly_source()
    try:
        return compressed_plotly_js(user_cache_dir(), source)
    except OSError:
        return source


def serve_plotly_js(manager: BidiComponentManager) -> None:
    """Declare the folder of the served Plotly.js as a component asset folder, so that the
    server serves it (once per server; cheap to call again)."""
    if manager.get_component_asset_root(ASSETS_NAME) is not None:
        return
    served = _served_file()
    manifest = ComponentManifest(
        name=ASSETS_PROJECT,
        version=plotly.__version__,
        components=[ComponentConfig(name=ASSETS_COMPONENT, asset_dir=served.parent.name)],
    )
    manager.register_from_manifest(manifest, served.parent.parent)


def plotly_js_url() -> str:
    """Where the page finds Plotly.js (under the server's base path, if it has one)."""
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    parts = [base, "_stcore/bidi-components", ASSETS_NAME, _served_file().name]
    return "/" + "/".join(part for part in parts if part)


def preload_plotly() -> None:
    """Have the browser fetch and compile Plotly.js now, before any chart is ready: call it
    first thing in the script, before its heavy imports (nothing shows on the page)."""
    serve_plotly_js(get_bidi_component_manager())
    url = json.dumps({"plotly": plotly_js_url()}).encode()
    _preload(key=PRELOAD_KEY, data=url, width="stretch", height="content")


def spec_bytes(figure: go.Figure, config: Mapping[str, Any] | None = None) -> bytes:
    """What the component draws: the figure as Plotly JSON, Plotly's options (CONFIG, then
    `config`), Plotly.js' URL."""
    head = json.dumps({"config": {**CONFIG, **(config or {})}, "plotly": plotly_js_url()})
    body = pio.to_json(figure, validate=False)
    return f'{head[:-1]}, "figure": {body}}}'.encode()


def live_chart(figure: go.Figure, key: str, config: Mapping[str, Any] | None = None) -> None:
    """Draw `figure` in the chart named `key`, redrawn in place at each rerun (the user's
    zoom and pan stay while the figure's ``layout.uirevision`` does). `config`: Plotly
    options over CONFIG, e.g. no mode bar."""
    serve_plotly_js(get_bidi_component_manager())
    _mount(key=key, data=spec_bytes(figure, config), width="stretch", height="content")
