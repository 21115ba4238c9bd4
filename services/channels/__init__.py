"""Notification channels: signed webhooks with durable retries, and Server-Sent Events."""
