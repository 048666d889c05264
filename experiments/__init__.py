"""Command-line entry points and flag files of audjax's experiments."""
