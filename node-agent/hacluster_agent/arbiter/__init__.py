"""Lease arbitration: the one record of who owns the VIP when the heartbeat link cannot tell."""
