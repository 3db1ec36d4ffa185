"""Shared training machinery: the one loop (fit), checkpoints, seeding, schedules, logs, progress, input read-ahead."""
