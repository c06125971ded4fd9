"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class PoseEdgeError(Exception):
    """A problem with the user's input or environment; the message says what and what to do."""


class DataError(PoseEdgeError):
    """A data file (image, annotation, video) is missing, corrupt or malformed."""


class ArtifactError(PoseEdgeError):
    """A checkpoint, ONNX model or engine is missing, truncated, or built for something else."""


class DataWarning(UserWarning):
    """Bad records left out of a data set or results file (strict mode refuses them instead)."""
