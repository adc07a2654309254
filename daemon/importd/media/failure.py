"""The one failure value every extraction stage returns instead of raising."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExtractionFailure:
    """An extractor could not analyse one file; the file is still registered.

    `extractor` is a key of `versions.EXTRACTOR_VERSIONS`; `reason` is one line for `importctl errors`.
    """

    extractor: str
    reason: str

    def __str__(self) -> str:
        return f"{self.extractor}: {self.reason}"


def describe(error: BaseException) -> str:
    """One line naming the exception type and its message (decoders often raise bare `OSError`s)."""
    message = " ".join(str(error).split())
    name = type(error).__name__
    return f"{name}: {message}" if message else name
