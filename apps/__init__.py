"""The ``recon`` command line: thin shells over ``recon.engine``."""
