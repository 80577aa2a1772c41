"""`python -m dashboards`: the same as `python -m dashboards.build`."""

import sys

from dashboards.build import main

sys.exit(main())
