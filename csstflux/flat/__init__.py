"""Flat-field maths on plain arrays: detectors and traces, simulated exposures, 2D polynomial fits,
normalised flats and their Monte-Carlo errors."""
