"""Test doubles for remote APIs that cannot be reached from here; they speak the real wire formats."""
