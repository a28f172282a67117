"""Data: offline readers and input pipelines."""
