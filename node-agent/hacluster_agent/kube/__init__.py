"""The agent's Kubernetes edge: its config from the operator's Secret, its reports, its Lease."""
