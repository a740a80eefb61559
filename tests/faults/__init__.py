"""Fault injection for tests: a proxy in front of Azurite that fails chosen storage requests."""
