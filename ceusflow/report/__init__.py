"""Writing results: figures, tables and the self-contained HTML report."""
