"""``python -m recon``: the ``recon`` command, so that ``torchrun --nproc-per-node N -m recon fit ...`` works."""
import sys

from recon.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
