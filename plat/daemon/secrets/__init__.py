"""Secrets: sealed at rest (:mod:`.sealing`), read from Vault (:mod:`.vault`), and
the service the control API and deploys use (:mod:`.service`)."""
