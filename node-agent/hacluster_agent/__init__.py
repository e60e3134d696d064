"""hacluster node agent: Heartbeat config, wire protocol, membership engine, media, resources."""
