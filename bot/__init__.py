"""Runtime side of supportbot: settings, classifier and generator inference, router, store."""
