"""simdistill: offline SimDistill (cached LiDAR-camera teacher → camera-only BEV student)."""

__version__ = "0.1.0"
