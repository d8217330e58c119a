"""Sky geometry: great-circle separations, nested HEALPix pixels, cone queries and
cross-matching."""
