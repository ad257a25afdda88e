"""The exception type for bad user input (the CLI prints its one-line message and exits non-zero)
and the warning type for input that is used in part (the CLI prints it as one line)."""


class NasSearchError(ValueError):
    """Bad input (config, dataset, genotype, checkpoint, argument) with a message naming what is at fault."""


class NasSearchWarning(UserWarning):
    """Input used in part, e.g. a truncated record skipped; the message names the file and line."""
