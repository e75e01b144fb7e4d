"""The strategy runner: the core engine driven by a real clock against the paper or live venue."""
