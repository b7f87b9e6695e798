"""Which items, from which connector, minimised to what was consented and allowed."""
