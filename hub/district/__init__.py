"""District server (docs/district.md)."""
