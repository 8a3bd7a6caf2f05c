"""inputs layer of the V-Express library (see docs/ARCHITECTURE.md)."""
