"""Console hygiene: each message once, without advertisements or library-internal deprecations."""

import logging
import warnings


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
