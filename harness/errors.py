"""Errors a user can fix. They print as one message, never as a traceback."""


class UserError(Exception):
    """A problem in the user's input (config, data, command line) with a message that names the fix."""


class DataError(UserError):
    """A dataset is missing, corrupt or in the wrong format."""


class ConfigError(UserError):
    """A configuration that cannot run (unknown name, bad value, bad combination)."""


def is_oom(exc: BaseException) -> bool:
    """Did this exception come from running out of memory (CUDA, cuFFT, or the host allocator)?"""
    import torch  # here, so that importing the error types stays free of torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    # CPU allocations and cuFFT plans fail as RuntimeErrors that say so.
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cufft_alloc_failed"))


def exit_with(exc: UserError, prefix: str = "seqbench") -> None:
    """Print a user error as one line (no traceback) and exit with status 2."""
    import sys

    print(f"{prefix}: error: {exc}", file=sys.stderr)
    sys.exit(2)
