import sys

from jaxbp.cli import main

sys.exit(main())
