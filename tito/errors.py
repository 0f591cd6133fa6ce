"""The one exception type tito's library raises for a state the student must fix."""


class TitoError(Exception):
    """A bad state with a message for the student (the command line prints it and exits non-zero)."""
