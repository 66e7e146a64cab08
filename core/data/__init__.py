"""Dataset ingest for the Kaggle UW-Madison GI Tract layout, demo data, preprocessing cache."""

ORGANS = ("large_bowel", "small_bowel", "stomach")
"""Organ classes in the order of the model's output channels and of train.csv's rows per slice."""
