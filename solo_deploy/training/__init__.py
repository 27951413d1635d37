"""Training stage: targets, losses (pure functions) and the Lightning module and data module."""
