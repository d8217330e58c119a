"""csstflux.spectra"""
