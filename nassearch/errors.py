"""The exception type for bad user input (the CLI prints its one-line message and exits non-zero)
and the warning type for input that is used in part (the CLI prints it as one line)."""


class NasSearchError(ValueError):
    """Bad input (config, dataset, genotype, checkpoint, argument) with a message naming what is at fault."""


class NasSearchWarning(UserWarning):
    """Input used in part, e.g. a truncated record skipped; the message names the file and line."""


def first_line(exc: BaseException | str, default: str | None = None) -> str:
    """The first non-empty line of an exception's message (library errors often carry pages), or
    `default` when there is none (the exception's type name unless given)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if lines:
        return lines[0]
    if default is not None:
        return default
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


def require_int(name: str, value: object, least: int = 1) -> int:
    """`value` as a whole number of at least `least`, or one line naming `name` (a flag or key)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise NasSearchError(f"{name}: must be an integer of at least {least}, got {value!r}")
    return value
