class CompositionError(ValueError):
    """A composition cannot be built or run as asked; the message names the problem."""
