"""Keeping workers and the queue healthy: the embedded Redis, worker processes, recovery,
periodic cleanup and graceful shutdown."""
