"""tfcluster dashboard: `streamlit run dashboard/app.py [-- --runs DIR]`.

The page is dashboard.page. This script only sets the page up and, before importing it,
has the browser fetch and compile Plotly.js (dashboard.livechart), which then goes on while
the server imports the page's modules and reads the run: the first chart comes sooner.

`streamlit run` puts this script's folder on sys.path, not the repository's: the repository
goes first, so that the page runs from any folder with only the requirements installed, and
always as this copy's code (not that of another copy installed in the environment).
"""

import sys
from pathlib import Path

REPOSITORY = str(Path(__file__).resolve().parents[1])
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)

import streamlit as st  # noqa: E402  (after the repository is on sys.path)

from dashboard.livechart import preload_plotly  # noqa: E402

st.set_page_config(page_title="tfcluster", page_icon="📈", layout="wide")
# First thing, before the page's heavy imports: the browser fetches and compiles Plotly.js
# (1.5 s of its CPU here) while the server imports and runs the rest.
with st.sidebar:
    preload_plotly()

from dashboard.page import main  # noqa: E402  (after the preload, on purpose)

main()
