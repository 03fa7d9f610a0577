"""Console hygiene: each message once, without advertisements or library-internal deprecations; plain text tables."""

import logging
import warnings
from collections.abc import Sequence


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud" not in record.getMessage()


def tidy_lightning_logging() -> None:
    """Call after importing lightning: its own console handler would print every line twice under Hydra."""
    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        lightning_logger.handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def aligned_columns(rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Plain text columns (the header is the first row), each left- or right-aligned: cheaper to import than any
    table library, and easy to grep. `mlproj runs` and `mlproj compare` print their tables with it."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(right))]
    return "\n".join(
        "  ".join(
            text.rjust(width) if flush_right else text.ljust(width)
            for text, width, flush_right in zip(row, widths, right, strict=True)
        ).rstrip()
        for row in rows
    )
