"""The page's tabs, one module each, each with a ``render`` function."""
