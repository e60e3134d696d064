"""hacluster."""
