"""The contract between the hacluster operator and its node agents, imported by both (CloudNativePG's
`api/v1` is the model): Heartbeat's file formats, the HACluster models, the agent's configuration
and report, the annotation keys. It imports neither side."""
