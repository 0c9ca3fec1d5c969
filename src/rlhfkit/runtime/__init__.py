"""Plumbing shared by the algorithms: distributed setup, checkpoints, metrics, seeding, progress."""
