"""Model construction and loading; the architectures themselves are plugins."""
