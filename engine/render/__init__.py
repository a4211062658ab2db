"""Rendering runs along camera paths: stored cameras, orbit/spiral/interpolate/test paths."""
