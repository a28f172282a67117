"""Search loops and jitted training steps."""
