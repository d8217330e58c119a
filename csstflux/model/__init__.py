"""csstflux.model"""
