"""The page's tabs, one module each, each drawn by its ``render(...)``.

Runs and Compare look at every run of the folder; the others at the chosen run, and redraw
their live parts through dashboard.refresh.
"""
