import sys

from jaxbp.bench import main

sys.exit(main())
