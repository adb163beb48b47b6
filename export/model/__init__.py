"""Reading and rebuilding the user's model for export (see `rebuild`)."""
