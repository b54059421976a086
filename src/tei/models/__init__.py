"""Model loading and our own packed PyTorch implementations of the supported architectures."""
