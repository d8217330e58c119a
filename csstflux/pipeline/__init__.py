"""csstflux.pipeline"""
