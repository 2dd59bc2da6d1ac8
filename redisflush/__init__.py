"""redisflush: flush Azure Cache for Redis through ARM from a Service Bus message."""

__version__ = "0.1.0"
