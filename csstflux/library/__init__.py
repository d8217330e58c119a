"""Spectral libraries made into training material: vetting, the input emulator, training sets."""
