"""Output sizes and caps shared by the preprocessors (what counts as a character, how outputs are cut)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_output
from traitlets import Integer

DEFAULT_MAX_OUTPUT_CHARS = 100_000
DEFAULT_MAX_IMAGE_CHARS = 5_000_000
DEFAULT_MAX_TOTAL_CHARS = 1_000_000
DEFAULT_MAX_TOTAL_IMAGE_CHARS = 5_000_000
MIN_ERROR_CHARS = 2_000  # an error's message and traceback keep at least this much, budget or not
TRUNCATED_NOTE = "\n... output truncated ({limit} characters per cell) ...\n"
TOTAL_TRUNCATED_NOTE = (
    "\n... output truncated (the whole notebook keeps {chars} characters of text and {images} of images) ...\n"
)


def char_limit(default: int, help: str) -> Integer:
    """A configurable limit of output characters (a traitlets ``Integer`` tagged ``config=True``)."""
    return Integer(default, help=help).tag(config=True)


def _is_image(mime: str) -> bool:
    return mime.startswith("image/") and mime != "image/svg+xml"


def text_of(value: Any) -> str:
    """A MIME bundle value or stream text as one string (nbformat allows lists)."""
    if isinstance(value, list):
        return "".join(str(part) for part in value)
    if isinstance(value, str):
        return value
    return str(value)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def output_sizes(output: Mapping[str, Any]) -> tuple[int, int]:
    """``(text_chars, image_chars)`` of one output (stream, display, result or error)."""
    kind = output.get("output_type")
    if kind == "stream":
        return len(text_of(output.get("text", ""))), 0
    if kind == "error":
        return sum(len(line) for line in output.get("traceback", [])), 0
    text = image = 0
    for mime, value in (output.get("data") or {}).items():
        if _is_image(mime):
            image += len(text_of(value))
        else:
            text += len(text_of(value))
    return text, image


def truncation_note(name: str, limit: int, text: str | None = None) -> NotebookNode:
    return new_output("stream", name=name, text=TRUNCATED_NOTE.format(limit=limit) if text is None else text)


def error_output(ename: str, evalue: str) -> NotebookNode:
    """An error output whose traceback is the single line ``ename: evalue``."""
    line = f"{ename}: {evalue}" if evalue else ename
    return new_output("error", ename=ename, evalue=evalue, traceback=[line])


def cap_traceback(output: NotebookNode, max_chars: int) -> NotebookNode:
    """Shorten an error output's message and traceback to about ``max_chars`` characters each."""
    output["evalue"] = clip(str(output.get("evalue", "")), max_chars)
    lines: list[str] = []
    used = 0
    for line in output.get("traceback", []):
        if used + len(line) > max_chars:
            lines.append("... traceback truncated ...")
            break
        lines.append(line)
        used += len(line)
    output["traceback"] = lines
    return output


def cap_outputs(
    outputs: Sequence[NotebookNode],
    max_chars: int,
    max_image_chars: int,
    *,
    note_text: str | None = None,
    error_chars: int | None = None,
) -> list[NotebookNode]:
    """Outputs of one cell limited to ``max_chars`` of text and ``max_image_chars`` of images.

    Error outputs are always kept (grading depends on them) with their message
    and traceback shortened to ``error_chars`` each (default ``max_chars``);
    stream text is cut at the limit and followed by one note per stream name
    (so a cell that wrote to stderr still has stderr output); other text data
    (``text/plain``, ``text/html``...) over the limit is replaced by a note;
    images over the image budget are dropped.  ``note_text`` replaces the
    default "truncated (N characters per cell)" note.
    """
    max_chars = max(max_chars, 0)
    max_image_chars = max(max_image_chars, 0)
    kept: list[NotebookNode] = []
    text_used = image_used = 0
    noted: set[str] = set()

    def note(name: str) -> None:
        if name not in noted:
            noted.add(name)
            kept.append(truncation_note(name, max_chars, note_text))

    for output in outputs:
        kind = output.get("output_type")
        if kind == "error":
            kept.append(cap_traceback(output, max_chars if error_chars is None else error_chars))
            continue
        if kind == "stream":
            text = text_of(output.get("text", ""))
            name = output.get("name", "stdout")
            remaining = max_chars - text_used
            if len(text) <= remaining:
                kept.append(output)
                text_used += len(text)
                continue
            if remaining > 0:
                output["text"] = text[:remaining]
                kept.append(output)
                text_used = max_chars
            note(name)
            continue
        data = output.get("data") or {}
        new_data: dict[str, Any] = {}
        for mime, value in data.items():
            size = len(text_of(value))
            if _is_image(mime):
                if image_used + size <= max_image_chars:
                    new_data[mime] = value
                    image_used += size
            elif text_used + size <= max_chars:
                new_data[mime] = value
                text_used += size
        if new_data:
            output["data"] = new_data
            kept.append(output)
        if len(new_data) < len(data):
            note("stdout")
    return kept
