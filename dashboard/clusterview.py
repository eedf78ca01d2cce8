"""The cluster as a picture that stays readable from 1 to 1,000 workers.

Workers are small numbered tiles, grouped by host (the workers that share a machine stay
together under its name), coloured by state, with details on hover. Everything is laid out
here in pixels on a figure of fixed width, and a label is cut to the room it has, so no two
texts can overlap whatever the number of workers or the length of a host name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from dashboard import text
from dashboard.cluster import WorkerRow

WIDTH = 900
# Tiles are big while there are few workers, small when there are many.
TILE_SIZES = ((16, 40, 13), (128, 26, 10), (10**9, 22, 8))  # (up to N workers, px, font)
LABEL_HEIGHT = 18
FONT_SIZE = 11
# Widest glyph advance of the label font at FONT_SIZE, on the safe side: a label is cut so
# that `characters * CHAR_WIDTH` fits its room.
CHAR_WIDTH = 7.2
MAX_LABEL_WIDTH = 160
BLOCK_GAP = 18
ROW_GAP = 10
MAX_COLUMNS = 16
KEY_HEIGHT = 26

STATE_COLORS = {
    "starting": "#9e9e9e",
    "running": "#1f77b4",
    "finished": "#2ca02c",
    "failed": "#d62728",
    "aborted": "#c5b0d5",
    "stalled": "#ff7f0e",
    "stopped": "#8c564b",
    "unknown": "#c7c7c7",
}
STATE_NAMES = {
    "failed": "failed (cause)",
    "aborted": "aborted after it",
}


@dataclass(frozen=True)
class Tile:
    row: WorkerRow
    x: float
    y: float


@dataclass(frozen=True)
class Label:
    """A left-aligned text: its box is (x, y - height/2, x + width, y + height/2)."""

    text: str
    x: float
    y: float
    width: float


@dataclass(frozen=True)
class Layout:
    """Where everything goes: tiles, host names, and the colour key (state, its label)."""

    tiles: tuple[Tile, ...]
    hosts: tuple[Label, ...]
    key: tuple[tuple[str, Label], ...]
    height: float
    width: float

    @property
    def labels(self) -> tuple[Label, ...]:
        return (*self.hosts, *(label for _, label in self.key))


def fit(label: str, room: float) -> str:
    """`label` cut (with an ellipsis) to what `room` pixels hold."""
    chars = max(1, int(room // CHAR_WIDTH))
    return label if len(label) <= chars else label[: max(1, chars - 1)] + "…"


def _hosts(rows: Sequence[WorkerRow]) -> list[tuple[str, list[WorkerRow]]]:
    groups: dict[str, list[WorkerRow]] = {}
    for row in rows:
        groups.setdefault(row.host, []).append(row)
    return list(groups.items())


def state_of(row: WorkerRow) -> str:
    state = row.shown_state
    return state if state in STATE_COLORS else "unknown"


def tile_size(workers: int) -> tuple[int, int]:
    """(tile side in px, font size of its number) for a cluster of this many workers."""
    return next((side, font) for most, side, font in TILE_SIZES if workers <= most)


def layout(rows: Sequence[WorkerRow], width: float = WIDTH) -> Layout:
    """Host blocks flowed left to right: the host's name above the tiles of its workers."""
    tile = tile_size(len(rows))[0]
    pitch = tile + 5
    columns_fit = max(1, int((width + pitch - tile) // pitch))
    tiles: list[Tile] = []
    hosts: list[Label] = []
    x = y = 0.0
    line_height = 0.0
    for host, members in _hosts(rows):
        columns = min(len(members), MAX_COLUMNS, columns_fit)
        lines = math.ceil(len(members) / columns)
        tiles_width = columns * pitch - (pitch - tile)
        name = f"{host} ({len(members)})" if len(members) > 1 else host
        wanted = min(len(name) * CHAR_WIDTH + 1, MAX_LABEL_WIDTH)
        block_width = min(max(tiles_width, wanted), width)
        block_height = LABEL_HEIGHT + lines * pitch
        if x > 0 and x + block_width > width:
            x = 0.0
            y += line_height + ROW_GAP
            line_height = 0.0
        hosts.append(Label(fit(name, block_width), x, y + LABEL_HEIGHT / 2, block_width))
        for position, row in enumerate(members):
            line, column = divmod(position, columns)
            tiles.append(
                Tile(row, x + column * pitch + tile / 2, y + LABEL_HEIGHT + line * pitch + tile / 2)
            )
        x += block_width + BLOCK_GAP
        line_height = max(line_height, block_height)
    height = y + line_height
    # The colour key: one square and name per state present, in a row under the hosts.
    key_y = height + ROW_GAP + KEY_HEIGHT / 2
    key_x = 0.0
    key = []
    for state in STATE_COLORS:
        if any(state_of(tile.row) == state for tile in tiles):
            name = STATE_NAMES.get(state, state)
            room = len(name) * CHAR_WIDTH
            key.append((state, Label(name, key_x + 18, key_y, room)))
            key_x += 18 + room + BLOCK_GAP
    return Layout(tuple(tiles), tuple(hosts), tuple(key), key_y + KEY_HEIGHT / 2, width)


def hover_text(row: WorkerRow) -> str:
    """Everything about one worker, every user-controlled part escaped for Plotly."""
    role = "chief" if row.role == "chief" else "worker"
    state = STATE_NAMES.get(row.shown_state, row.shown_state)
    progress = f"step {text.of_total(row.step, row.steps_total)}"
    lines = [
        f"<b>{role} {row.index}</b> · {text.svg(state)}",
        f"host {text.svg(row.host)}",
        f"address {text.svg(row.address or text.MISSING)}",
        f"phase {text.svg((row.phase or text.MISSING).replace('_', ' '))}",
        f"epoch {text.of_total(row.epoch, row.epochs)} · {progress}",
        f"loss {text.number(row.loss, 4)} · accuracy {text.number(row.accuracy, 4)}",
        f"examples/s {text.number(row.examples_per_sec)}",
        f"CPU {text.number(row.cpu_percent, 0)} % · memory {text.number(row.memory_mb, 0)} MB",
        f"last update {text.ago(row.since_update)}",
    ]
    if row.error:
        lines.append(f"error: {text.svg(row.error, 100)}")
    return "<br>".join(lines)


def cluster_figure(rows: Sequence[WorkerRow], width: float = WIDTH) -> go.Figure:
    """One trace per state (fast at any size); tile text is the worker's index."""
    placed = layout(rows, width)
    side, font = tile_size(len(rows))
    figure = go.Figure()
    for state, color in STATE_COLORS.items():
        tiles = [tile for tile in placed.tiles if state_of(tile.row) == state]
        if not tiles:
            continue
        figure.add_trace(
            go.Scatter(
                x=[tile.x for tile in tiles],
                y=[tile.y for tile in tiles],
                mode="markers+text",
                marker={
                    "size": side,
                    "symbol": "square",
                    "color": color,
                    "line": {
                        "color": "#222222",
                        "width": [3 if tile.row.cause else 1 for tile in tiles],
                    },
                },
                text=[str(tile.row.index) for tile in tiles],
                textfont={
                    "size": [font if t.row.index < 1000 else font - 2 for t in tiles],
                    "color": "#ffffff" if state in ("running", "failed", "stopped") else "#222222",
                },
                textposition="middle center",
                hovertext=[hover_text(tile.row) for tile in tiles],
                hoverinfo="text",
                name=STATE_NAMES.get(state, state),
                showlegend=False,
                meta={"state": state, "workers": [tile.row.index for tile in tiles]},
            )
        )
    hosts = placed.hosts
    figure.add_trace(
        go.Scatter(
            x=[label.x for label in hosts],
            y=[label.y for label in hosts],
            mode="text",
            text=[text.svg(label.text) for label in hosts],
            textposition="middle right",
            textfont={"size": FONT_SIZE, "color": "#444444"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[label.x - 12 for _, label in placed.key],
            y=[label.y for _, label in placed.key],
            mode="markers+text",
            marker={
                "size": 11,
                "symbol": "square",
                "color": [STATE_COLORS[state] for state, _ in placed.key],
            },
            text=[label.text for _, label in placed.key],
            textposition="middle right",
            textfont={"size": FONT_SIZE, "color": "#444444"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    figure.update_layout(
        width=width,
        height=placed.height + 4,
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        xaxis={"visible": False, "range": [-2, width], "fixedrange": True},
        yaxis={"visible": False, "range": [placed.height + 2, -2], "fixedrange": True},
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
        hoverlabel={"align": "left"},
        dragmode=False,
    )
    return figure
