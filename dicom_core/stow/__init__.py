"""STOW-RS: storing instances."""
