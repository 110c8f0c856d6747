"""inference (see docs)."""
