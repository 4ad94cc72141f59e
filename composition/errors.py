class CompositionError(ValueError):
    """A composition cannot be built or run as asked; the message names the problem."""


class UnconstrainedAnswer(CompositionError):
    """The strategy's own next-token rule allows no token that continues the constrained (JSON) answer: this
    strategy cannot answer this request under its response_format or tool_choice."""
