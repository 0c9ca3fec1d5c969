"""Training algorithms; each module reads top to bottom: setup, loop, save."""
