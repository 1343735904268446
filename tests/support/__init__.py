"""Helpers for the integration and end-to-end tiers: databases, server processes, clients, envelopes."""
