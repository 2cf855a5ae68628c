"""The one exception type the pipeline raises for problems a user can fix."""


class PipelineError(Exception):
    """A failure with a one-line message that names the thing and the fix."""


class ConfigError(PipelineError):
    """An invalid, unknown or impossible configuration value."""


class DataError(PipelineError):
    """A missing, corrupt or inconsistent data file."""
