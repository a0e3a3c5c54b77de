"""Outputs for people: region plots and result files."""
