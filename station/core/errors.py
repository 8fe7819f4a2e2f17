"""Exception types shared across the station. Every message names what is wrong."""


class StationError(Exception):
    """Base for errors the station reports to a person (CLI prints the message, no traceback)."""


class ConfigError(StationError):
    """A configuration file, key or value is wrong."""


class ImageError(StationError):
    """An image cannot be read or has a shape/depth the engine cannot take."""


class ModelError(StationError):
    """A model artifact or backbone weight file is missing, damaged or incompatible."""


class RuntimeUnavailable(StationError):
    """An inference runtime cannot run here (library missing, no GPU, ...)."""


class CameraError(StationError):
    """A camera cannot be found, opened, configured, or was lost mid-stream."""


class StorageError(StationError):
    """Records or images could not be written (disk full, permissions, corrupt database)."""
