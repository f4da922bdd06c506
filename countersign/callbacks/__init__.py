"""Callbacks: signed POSTs of decided requests, delivered from the durable outbox."""
