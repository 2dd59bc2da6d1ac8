"""Test packages: a package root, so tests/azure cannot shadow the azure SDK namespace."""
