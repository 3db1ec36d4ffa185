"""The one project exception family. The CLI turns any `SimDistillError` into a one-line message and exit 2."""


class SimDistillError(Exception):
    """A user-facing error: bad input, a missing file, a mismatched store. Its message names the fix."""


class ConfigError(SimDistillError):
    """A config file or override is malformed (unknown key, wrong type, inconsistent values)."""


class DataError(SimDistillError):
    """A dataroot, version, split or data file is missing or wrong."""


class StoreError(SimDistillError):
    """A feature store is missing, incompatible, incomplete or corrupted."""


class CheckpointError(SimDistillError):
    """A checkpoint is missing, unreadable or belongs to another model/config."""


class ClusterError(SimDistillError):
    """A Dask scheduler is unreachable or has no workers, or a worker died while running a task."""
