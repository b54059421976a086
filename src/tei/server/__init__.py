"""HTTP layer: JSON, dialects and status codes. Never touches tensors."""
