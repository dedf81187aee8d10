"""`python -m rftcli.families --matrix`: print the support table as the Markdown block README.md holds."""

from __future__ import annotations

import sys

from rftcli.families.support import matrix

if sys.argv[1:] != ["--matrix"]:
    sys.exit("usage: python -m rftcli.families --matrix")
sys.stdout.write(matrix())
