"""The one exception type users see as a single line instead of a traceback."""


class ConfigError(Exception):
    """A problem the user fixes from the command line or the file system.

    Entry points print it as one line on stderr and exit with status 2; every other exception
    is a bug and keeps its traceback.
    """


def find_config_error(error: BaseException) -> ConfigError | None:
    """Hydra's `instantiate` wraps what a constructor raises; look through the chain for ours."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
