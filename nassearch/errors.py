"""The one exception type for bad user input; the CLI prints its one-line message and exits non-zero."""


class NasSearchError(ValueError):
    """Bad input (config, dataset, genotype, checkpoint, argument) with a message naming what is at fault."""
