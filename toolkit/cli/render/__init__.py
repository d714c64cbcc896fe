"""Terminal rendering of library results (rich tables, progress); only the CLI draws."""
