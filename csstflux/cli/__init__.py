"""csstflux.cli"""
