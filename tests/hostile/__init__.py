"""Hostile and edge-case inputs for the offline CLI, run as a corpus (see README.md)."""
