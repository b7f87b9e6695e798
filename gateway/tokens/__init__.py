"""Keys, JWS signing and verification, access tokens and receipts."""
