"""The mistakes a user can fix, as one family of exceptions shared by every stage.

Library code raises them with a one-line message that names the file, flag or config key and the
fix. Every entry point turns them into `error: <message>` on stderr and exit code 2
(common.cli.exit_on_user_error). Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a flag, a config key or value, a file or a folder the user can fix."""


class ConfigError(UserError, ValueError):
    """A config key, config value or command-line flag that cannot be used."""


class DatasetError(UserError):
    """A data set folder that is missing, incomplete or unreadable."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: missing, damaged, unsafe, or of the wrong kind."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")


class RecordMismatchError(UserError, ValueError):
    """Saved state (a checkpoint, a results file, a data folder) written by another run, which a rerun
    must neither resume from nor overwrite."""


class OutputFolderError(UserError):
    """An output folder that cannot be written: read-only, full, named in bytes that are not UTF-8, or in
    use by another run."""
