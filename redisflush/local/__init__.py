"""The embedded default: local bus, local Functions host, ARM emulator (no Azure needed)."""
