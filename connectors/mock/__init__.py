"""Mock department services (ImmD, e-ME, utilities) for demos and tests. Not real data."""
