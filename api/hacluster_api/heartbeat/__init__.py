"""Heartbeat's own files (ha.cf, haresources, authkeys): one parser and one renderer per format."""
