"""Editing backends behind one Editor contract (see base.py)."""
