"""Workflows of our own that ship with the product (no artifact files needed)."""
