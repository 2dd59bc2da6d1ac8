"""Test support: a scripted ARM server on loopback and an in-memory Service Bus."""
