"""Alembic migrations of the district database (run with `sipas-district migrate`)."""
