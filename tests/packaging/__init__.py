"""Packaging: what a plain `pip install` of the wheel gives a user."""
