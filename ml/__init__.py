"""Leukolab's machine-learning library: localization, classification and whole-field analysis.

Pure Python over numpy arrays and PIL images; it never imports Django.
"""
