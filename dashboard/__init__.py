"""The dashboard: `streamlit run dashboard/app.py` shows the runs under a runs folder.

Everything here only reads run directories and never imports TensorFlow, so the page starts
in a second and runs on a machine that has no TensorFlow at all.
"""
