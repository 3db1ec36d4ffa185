"""Shared training machinery (checkpoints, seeding, schedules, logs) and the teacher trainer."""
