"""Multi-stage experiments built on the trainer (configs name them with a section of their own)."""
