"""The components (L4): responder, requester, and how they are run."""
