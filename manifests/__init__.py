"""Built-in task and job manifests, shipped as package data so `pip install .` carries them."""
