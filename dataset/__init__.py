"""Transition datasets on Parquet: the replay's rows as Arrow tables (schema.py), written by a
dataset sink and read back as a dataset source (parquet.py), summarised (summary.py) and labelled
by feedback models on Ray Data (label.py). docs/datasets.md describes the layout."""
