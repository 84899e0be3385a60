"""Settings from the environment, and the deployment files beside them."""

from config.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError"]
