"""Exact Online webhooks: signature verification (:mod:`.signature`) and subscriptions (:mod:`.subscriptions`)."""
