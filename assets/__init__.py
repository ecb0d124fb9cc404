"""What data exists: the asset graph from landing files to predictions (docs/contracts.md)."""
