"""Launch a multi-worker TensorFlow job on the hosts of a hosts file (see fabfile.py)."""
