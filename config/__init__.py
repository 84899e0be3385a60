"""Settings from the environment, and the deployment files beside them."""

from config.settings import (
    CANCELLED_MESSAGE,
    DELETED_MESSAGE,
    RECOVERED_MESSAGE,
    Settings,
    SettingsError,
)

__all__ = ["CANCELLED_MESSAGE", "DELETED_MESSAGE", "RECOVERED_MESSAGE", "Settings", "SettingsError"]
