"""Contract tests: every adapter of a port passes one suite (docs/design.md)."""
