"""Deleting studies, series and instances."""
