"""Small Lightning callbacks."""
