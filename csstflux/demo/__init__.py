"""The embedded demo: a LAMOST-format release, its header photometry and a slitless field, built
from the shipped emulator."""
