"""Demo data: requesters with their keys (private keys included: DEMO ONLY, never for
production), the demo citizen, and the seeding that loads them."""
