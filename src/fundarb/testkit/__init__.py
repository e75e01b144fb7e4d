"""Test equipment that production code never imports: the loopback exchange emulator."""
