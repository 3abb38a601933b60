"""The two kinds of error the controller distinguishes.

TemporaryError: the operation may succeed later (network, throttling, a server restart); the caller
retries with a delay. PermanentError: retrying cannot help (bad input, a corrupt record); the caller
records the reason and moves on, or stops with the message if it is the user's input.
"""


class TemporaryError(Exception):
    """Retry later: nothing is wrong with the request itself."""


class PermanentError(Exception):
    """Record and move on (or stop, for user input): retrying gives the same answer."""


class ConfigError(PermanentError):
    """Invalid user input (config file, flags, space); the message names the field and the fix."""


class SpaceError(ConfigError):
    """Invalid search space; the message names the path of the bad entry."""


class RecordError(PermanentError):
    """A record in the store is malformed; the message names its key."""
