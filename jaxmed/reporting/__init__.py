"""Reporting: plots, the HTML report, run comparison tables."""
