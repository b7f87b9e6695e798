"""The citizen's pages: mock iAM Smart login, the consent screen, /me."""
