"""One module per model family; models/registry.py says which serves a folder and what a module provides."""
