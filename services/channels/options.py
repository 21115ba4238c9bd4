"""The channels' settings are fields of ``shared.settings.Settings``.

``ChannelSettings`` names the same class where the channels read them. Lists
are JSON in the environment, e.g. ``BACKTRACK_WEBHOOK_BACKOFF='[0.05, 0.05]'``.
"""

from __future__ import annotations

from shared.settings import DEFAULT_BACKOFF, Settings

ChannelSettings = Settings


def channel_settings(settings: Settings) -> Settings:
    """The channels' view of ``settings`` (the same object)."""
    return settings


__all__ = ["DEFAULT_BACKOFF", "ChannelSettings", "channel_settings"]
