"""Usage per caller, model and day, and token budgets per caller."""
