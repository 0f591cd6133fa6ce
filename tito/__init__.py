"""tito: the student's command line for the course's modules (view, complete, status, submit)."""

from tito.errors import TitoError

__all__ = ["TitoError"]
