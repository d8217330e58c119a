"""FITS at the byte level: one decoder (HDU walking, header values, checksums, images and
tables, :mod:`csstflux.io.fits.decode`) and the LAMOST LRS writer."""
