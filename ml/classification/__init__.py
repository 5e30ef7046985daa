"""White-cell classification (see ml/classification/README in the docs of the issue)."""
