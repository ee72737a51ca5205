"""Managed event streams: server-run subscriptions that deliver batches to webhooks and
WebSocket consumers, with checkpoints, retries, parking and statistics."""
