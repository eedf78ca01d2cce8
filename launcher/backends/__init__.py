"""The backends that come with the launcher, one module each (see launcher/registry.py)."""
