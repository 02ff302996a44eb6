"""Plots (matplotlib). Functions take the object to draw first and return a ``Figure``."""
