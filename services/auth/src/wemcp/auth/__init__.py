"""WeMcp auth service: users, roles, invites, OAuth logins, platform API keys, JWKS and the secrets vault."""
