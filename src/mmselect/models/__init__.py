"""Model presets, loading, and built-in tiny test models."""
