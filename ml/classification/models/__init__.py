"""Leukolab's own classifier architectures, one file each; importing registers them."""
