"""hacluster node agent: Heartbeat config files, wire protocol, membership engine, media and resource drivers."""
