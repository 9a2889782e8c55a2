"""Errors a user can meet. Each carries a message meant for people; the CLI
catches :class:`PvmonError` once, prints the message on one line and exits
with :data:`EXIT_ERROR`."""

EXIT_OK = 0
EXIT_GUEST_CRASH = 1   # the guest crashed, triple-faulted or hung
EXIT_ERROR = 2         # pvmon itself could not do what was asked


class PvmonError(Exception):
    """Base of every error pvmon reports to a user."""


class GuestImageError(PvmonError):
    """A guest image (vmlinuz, vmlinux, built-in image) is missing or malformed."""


class GuestNotFound(PvmonError):
    """A guest name is neither cached, built in, nor a path."""


class FetchError(PvmonError):
    """Fetching a Debian kernel package failed (no apt, no network, bad package)."""


class TraceError(PvmonError):
    """A trace file is unreadable, corrupt or of an unknown format version."""


class BackendError(PvmonError):
    """An unknown backend name or a malformed backend profile."""


class EngineError(PvmonError):
    """The engine's assumptions about the pinned Unicorn build do not hold."""
