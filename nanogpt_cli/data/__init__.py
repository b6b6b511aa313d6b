"""Datasets: download, tokenize, token files and the batch loader."""
