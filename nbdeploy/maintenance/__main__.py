"""``python -m nbdeploy.maintenance NAME``: the scheduler of one name (started by ``Deployment.maintain``)."""

import sys

from .scheduler import main

sys.exit(main())
