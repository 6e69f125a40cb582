"""Passwords, sessions, API keys and quotas."""
