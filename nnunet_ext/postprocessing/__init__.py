"""postprocessing (see docs)."""
